from servesweep.cli import main

raise SystemExit(main())
