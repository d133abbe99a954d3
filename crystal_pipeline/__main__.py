from crystal_pipeline.cli import main

raise SystemExit(main())
