"""``python -m training``: train the generator's colour decoder (see training/train.py; the style path: ``python -m training.style_train``)."""

from training.train import main

raise SystemExit(main())
