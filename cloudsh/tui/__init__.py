"""The full-screen Textual front end (`cloudsh` with no arguments)."""
