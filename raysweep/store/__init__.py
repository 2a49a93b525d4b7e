"""The metrics store: one fixed Arrow schema, one Parquet part file per trial, written atomically.

Typical use::

    from raysweep.store import read_metrics, write_trial_rows

    write_trial_rows(sweep_dir, "sgd-nn-pack000-mlp-digits", rows)   # replaces that trial's part
    table = read_metrics(sweep_dir)          # pyarrow.Table of the whole sweep (or its metrics/)
    df = table.to_pandas()                   # if pandas is installed

A row is one target of a trial after one epoch; a trial may pack several targets of one
eigen-index (seeds, learning rates), told apart by ``target_id`` (:func:`make_target_id`) and
described by ``axes`` (the grid point, JSON; :func:`axes_json`). Parts of the previous schema
(``metrics/v1``) are read back upgraded.

No Ray here: trials (``raysweep.sweep``) write through these functions, and the CLI and the
analysis read through them.

Modules, one idea each:

- ``schema``: :data:`METRICS_SCHEMA`, the columns, row validation, target ids, v1 upgrade.
- ``parts``: the part files (atomic write, read of a whole sweep, the saved config).
- ``summary``: latest rows, trial states, variants and the text tables of ``raysweep status``.
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
    resolve_sweep_dir,
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
    METRICS_SCHEMA_V1,
    NO_AXES,
    NULLABLE_COLUMNS,
    SCHEMA_VERSION,
    SORT_COLUMNS,
    STATUSES,
    TERMINAL_STATUSES,
    axes_json,
    check_trial_id,
    empty_table,
    make_target_id,
    parse_axes,
    rows_to_table,
    upgrade_v1,
    validate_rows,
)
from raysweep.store.summary import (
    REPLICATE_AXIS,
    VARIANT_EXCLUDE,
    TrialState,
    count_states,
    count_target_statuses,
    describe_replicates,
    format_accuracy,
    format_trial_states,
    latest_rows,
    trial_states,
    variant_of,
)

__all__ = [
    "COLUMNS",
    "CONFIG_FILE",
    "DamagedPart",
    "DamagedPartWarning",
    "IDENTITY_COLUMNS",
    "KEY_COLUMNS",
    "METRICS_DIR",
    "METRICS_SCHEMA",
    "METRICS_SCHEMA_V1",
    "METRIC_COLUMNS",
    "NO_AXES",
    "NULLABLE_COLUMNS",
    "QUARANTINE_DIR",
    "REPLICATE_AXIS",
    "SCHEMA_VERSION",
    "SORT_COLUMNS",
    "STATUSES",
    "TERMINAL_STATUSES",
    "TrialState",
    "VARIANT_EXCLUDE",
    "axes_json",
    "check_trial_id",
    "count_states",
    "count_target_statuses",
    "describe_replicates",
    "empty_table",
    "format_accuracy",
    "format_trial_states",
    "latest_rows",
    "list_parts",
    "load_sweep_config",
    "make_target_id",
    "metrics_dir",
    "parse_axes",
    "part_path",
    "quarantine_part",
    "read_metrics",
    "read_part",
    "read_trial_rows",
    "resolve_sweep_dir",
    "rows_to_table",
    "save_sweep_config",
    "scan_metrics",
    "trial_states",
    "upgrade_v1",
    "validate_rows",
    "variant_of",
    "write_trial_rows",
    "write_trial_table",
]
