"""``tunesmith retrain``: the next model version from reviewed corrections (docs/retrain.md).

    corrections.py   find the export, re-check it against the frozen pack, hold out the new slice
    mix.py           the new snapshot's sources and the training mix (new data + rehearsal)
    compare.py       champion vs challenger on the same cases, paired
    gate.py          the retrain gate: better on the new slice, non-inferior per field on the frozen pack
    run.py           the stage: inputs, data, train, compare, register, rollout, the record
    cli.py           the thin typer command
"""
