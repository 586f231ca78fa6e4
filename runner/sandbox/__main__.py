from runner.sandbox.server import main

raise SystemExit(main())
