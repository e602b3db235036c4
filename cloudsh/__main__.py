from cloudsh.cli import run

run()
