"""`python -m gpuferry.worker JOB_DIR`: run the job in that folder (started detached by the client)."""

from gpuferry.worker.run import main

raise SystemExit(main())
