"""The metrics store: one fixed Arrow schema, one Parquet part file per trial, written atomically.

Typical use::

    from raysweep.store import read_metrics, write_trial_rows

    write_trial_rows(sweep_dir, "sgd-nn-pack000-mlp-digits", rows)   # replaces that trial's part
    table = read_metrics(sweep_dir)          # pyarrow.Table of the whole sweep
    df = table.to_pandas()                   # if pandas is installed

No Ray here: trials (``raysweep.sweep``) write through these functions, and the CLI and the
analysis read through them.

Modules, one idea each:

- ``schema``: :data:`METRICS_SCHEMA`, the columns and row validation.
- ``parts``: the part files (atomic write, read of a whole sweep, the saved config).
- ``summary``: latest rows, trial states and the text tables of ``raysweep status``.
"""

from raysweep.store.parts import (
    CONFIG_FILE,
    METRICS_DIR,
    QUARANTINE_DIR,
    DamagedPart,
    DamagedPartWarning,
    list_parts,
    load_sweep_config,
    metrics_dir,
    part_path,
    quarantine_part,
    read_metrics,
    read_part,
    read_trial_rows,
    save_sweep_config,
    scan_metrics,
    write_trial_rows,
    write_trial_table,
)
from raysweep.store.schema import (
    COLUMNS,
    IDENTITY_COLUMNS,
    KEY_COLUMNS,
    METRIC_COLUMNS,
    METRICS_SCHEMA,
    STATUSES,
    TERMINAL_STATUSES,
    check_trial_id,
    empty_table,
    rows_to_table,
    validate_rows,
)
from raysweep.store.summary import (
    TrialState,
    count_states,
    count_target_statuses,
    format_accuracy,
    format_trial_states,
    latest_rows,
    trial_states,
)

__all__ = [
    "COLUMNS",
    "CONFIG_FILE",
    "DamagedPart",
    "DamagedPartWarning",
    "QUARANTINE_DIR",
    "IDENTITY_COLUMNS",
    "KEY_COLUMNS",
    "METRICS_DIR",
    "METRICS_SCHEMA",
    "METRIC_COLUMNS",
    "STATUSES",
    "TERMINAL_STATUSES",
    "TrialState",
    "check_trial_id",
    "count_states",
    "count_target_statuses",
    "empty_table",
    "format_accuracy",
    "format_trial_states",
    "latest_rows",
    "list_parts",
    "load_sweep_config",
    "metrics_dir",
    "part_path",
    "quarantine_part",
    "read_metrics",
    "scan_metrics",
    "read_part",
    "read_trial_rows",
    "rows_to_table",
    "save_sweep_config",
    "trial_states",
    "validate_rows",
    "write_trial_rows",
    "write_trial_table",
]
