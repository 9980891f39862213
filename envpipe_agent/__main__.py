from envpipe_agent.main import main

raise SystemExit(main())
