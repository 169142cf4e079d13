"""What runs inside a trial: the trainable (trainable.py), the device it really runs on
(device.py) and its retry policy (retry.py). The driver imports retry.py for Tune's
FailureConfig and for telling a lost node from the trial's own error."""
