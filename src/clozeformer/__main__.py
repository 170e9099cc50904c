from clozeformer.cli import main

raise SystemExit(main())
