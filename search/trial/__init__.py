"""What runs inside a trial: the trainable (trainable.py), the device it really runs on
(device.py) and the count of its own errors (retry.py). The driver's side of the retry policy
is search.tune.failures."""
