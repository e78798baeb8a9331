"""keras-tuner's distributed search for `shifter-tf tune`: one chief oracle plus tuner workers.

keras-tuner reads three variables on every process: KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT (where the chief's oracle listens) and KERASTUNER_TUNER_ID (`chief` on
the chief, a unique name such as `tuner1` on each worker). Its own chief only serves the oracle;
ours also runs trials (the oracle is thread-safe), so two processes split the trials. The chief
writes the trial tables and best.yaml; workers write only their trials' run folders, so DIR must
be shared storage (or the same machine).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Optional

VARS = ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")


def role(environ: Optional[dict] = None) -> Optional[str]:
    """`chief`, `worker` or None (not distributed); ConfigError naming a missing/bad variable."""
    env = os.environ if environ is None else environ
    from shifter_tf.errors import ConfigError

    given = [v for v in VARS if env.get(v, "").strip()]
    if not given:
        return None
    missing = [v for v in VARS if v not in given]
    if missing:
        raise ConfigError(f"{missing[0]}: not set, but {given[0]} is; a distributed search needs "
                          f"all of {', '.join(VARS)} on every process")
    port = env["KERASTUNER_ORACLE_PORT"]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"KERASTUNER_ORACLE_PORT: expected a port number, got {port!r}")
    return "chief" if "chief" in env["KERASTUNER_TUNER_ID"] else "worker"


def is_client() -> bool:
    """A worker of a distributed search: its oracle is a client of the chief's."""
    return role() == "worker"


def chief_search(tuner) -> None:
    """Serve the oracle to the workers (keras-tuner's gRPC servicer, in a thread) and run trials
    here too; return when no trial is left and every worker has been told to stop."""
    from keras_tuner.src.distribute import oracle_chief
    from keras_tuner.src.engine import trial as trial_module

    tuner.save()
    threading.Thread(target=oracle_chief.start_server, args=(tuner.oracle,), daemon=True,
                     name="keras-tuner-oracle").start()
    tuner.on_search_begin()
    while True:
        tuner.pre_create_trial()
        trial = tuner.oracle.create_trial(tuner.tuner_id)
        if trial.status == trial_module.TrialStatus.STOPPED:
            break
        if trial.status == trial_module.TrialStatus.IDLE:
            time.sleep(1)
            continue
        tuner.on_trial_begin(trial)
        print(f"shifter-tf tune: {tuner.tuner_id} runs trial {trial.trial_id}", flush=True)
        tuner._try_run_and_update_trial(trial)
        tuner.on_trial_end(trial)
    tuner.on_search_end()
    while not oracle_chief.exit_chief(tuner.oracle):   # workers' trials still running
        time.sleep(1)
