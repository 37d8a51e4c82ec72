"""``python -m xbq.fit``: print the seed comparison tables of docs/models.md."""

from xbq.fit.compare import main

raise SystemExit(main())
