"""``python -m training``: train the unified generator (see training/train.py)."""

from training.train import main

raise SystemExit(main())
