"""Where a sweep runs, as the driver sees it (ray is imported by ``connect``, not before):

    target = find_target(args.address)    # target.py: the cluster to attach to, or None
    with ray_session(target) as place:    # connect.py: ray.init; place.py: nodes, GPUs now and to come
        check_storage(args.storage, place, shared=args.shared_storage)   # before anything is written
        spec = replace(spec, gpus_per_trial=gpus_per_trial(place, spec.gpus_per_trial))  # once
        check_trial_fits(place, cpus=spec.cpus_per_trial, gpus=spec.gpus_per_trial)
        say(place.describe())

What runs inside a trial (its device, its retries) is search.trial's.
"""

from .connect import connect, ray_session
from .place import (SHARED_STORAGE_HELP, Place, check_storage, check_trial_fits, concurrent_trials,
                    gpus_per_trial)
from .target import ATTACH_RULE, Target, find_target

__all__ = ["ATTACH_RULE", "SHARED_STORAGE_HELP", "Place", "Target", "check_storage",
           "check_trial_fits", "concurrent_trials", "connect", "find_target", "gpus_per_trial",
           "ray_session"]
