from runner.sandbox import main

raise SystemExit(main())
