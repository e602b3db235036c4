from cloudsh.cli import main

raise SystemExit(main())
