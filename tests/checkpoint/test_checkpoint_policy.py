"""The save policy: which steps are saved, and into which slot, for a table of settings and requests."""

from __future__ import annotations

import pytest

from internevo_jax.checkpoint.policy import Request, SaveSettings, save_slot, snapshot_slot
from internevo_jax.config import config_from_dict

NONE, SAVE, EXIT = Request.NONE, Request.SAVE, Request.SAVE_AND_EXIT
EVERY4 = SaveSettings(every=4, total_steps=10)
SNAP3 = SaveSettings(every=4, snapshot_every=3, total_steps=20)
SNAP_ONLY = SaveSettings(snapshot_every=2, total_steps=100)
OFF = SaveSettings(every=1, snapshot_every=1, total_steps=10, enabled=False)
NEVER = SaveSettings(total_steps=10)
EMPTY = {}
SLOT0_NEWER = {"snapshot/0": 9, "snapshot/1": 6}
SLOT1_NEWER = {"snapshot/0": 3, "snapshot/1": 6}

CASES = [
    # settings, step, request, snapshot slot steps, expected slot
    (EVERY4, 1, NONE, EMPTY, None),
    (EVERY4, 4, NONE, EMPTY, ""),
    (EVERY4, 8, NONE, EMPTY, ""),
    (EVERY4, 10, NONE, EMPTY, ""),  # the last step is always saved
    (EVERY4, 5, SAVE, EMPTY, ""),  # stop file -N
    (EVERY4, 6, EXIT, EMPTY, ""),  # stop file +N or a signal
    (NEVER, 3, NONE, EMPTY, None),
    (NEVER, 10, NONE, EMPTY, ""),
    (NEVER, 3, SAVE, EMPTY, ""),
    (SNAP3, 3, NONE, EMPTY, "snapshot/0"),  # both empty: slot 0 first
    (SNAP3, 6, NONE, {"snapshot/0": 3, "snapshot/1": -1}, "snapshot/1"),
    (SNAP3, 9, NONE, SLOT1_NEWER, "snapshot/0"),  # overwrite the older snapshot, never the newest
    (SNAP3, 15, NONE, SLOT0_NEWER, "snapshot/1"),
    (SNAP3, 12, NONE, SLOT1_NEWER, ""),  # a regular save wins over a snapshot on the same step
    (SNAP3, 20, NONE, SLOT1_NEWER, ""),
    (SNAP3, 9, SAVE, SLOT1_NEWER, ""),  # a request is a regular save
    (SNAP3, 7, NONE, SLOT1_NEWER, None),
    (SNAP_ONLY, 2, NONE, {"snapshot/0": -1}, "snapshot/0"),
    (SNAP_ONLY, 100, NONE, EMPTY, ""),
    (OFF, 1, NONE, EMPTY, None),  # saving disabled: nothing, whatever is asked
    (OFF, 10, NONE, EMPTY, None),
    (OFF, 3, EXIT, EMPTY, None),
]


@pytest.mark.parametrize("settings,step,request_,slot_steps,expected", CASES)
def test_save_slot_table(settings, step, request_, slot_steps, expected):
    assert save_slot(step, settings, request_, slot_steps) == expected


def test_tie_between_slots_goes_to_slot_0():
    assert snapshot_slot({"snapshot/0": 5, "snapshot/1": 5}) == "snapshot/0"


def test_requests_order_so_the_largest_wins():
    assert max(NONE, SAVE, EXIT) is EXIT and max(NONE, SAVE) is SAVE


@pytest.mark.parametrize(
    "ckpt,expected",
    [
        (dict(save_ckpt_folder="/x", checkpoint_every=50), SaveSettings(50, None, 7, True)),
        (
            dict(save_ckpt_folder="/x", checkpoint_every=None, oss_snapshot_freq=0),
            SaveSettings(None, None, 7),
        ),
        (dict(save_ckpt_folder="/x", oss_snapshot_freq=5), SaveSettings(100, 5, 7, True)),
        (dict(save_ckpt_folder="/x", enable_save_ckpt=False), SaveSettings(100, None, 7, False)),
    ],
)
def test_settings_from_config(ckpt, expected):
    cfg = config_from_dict(dict(data=dict(total_steps=7), ckpt=ckpt))
    assert SaveSettings.from_config(cfg) == expected
