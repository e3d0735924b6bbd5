"""Writes Sparkplug B payloads made by an independent implementation
(pysparkplug, from PyPI) for willwatch's tests.

    python3 -m venv /tmp/sp && /tmp/sp/bin/pip install pysparkplug==0.6.1
    /tmp/sp/bin/python tests/data/sparkplug/generate.py

The files are committed; this script is how they were made. Timestamps are
fixed so the bytes are the same on every run. It also checks that
willwatch's rebirth request (`rebirth-request.bin`, written by the unit
test `payload::tests::the_committed_rebirth_request_is_current`) decodes
here as a Node Control/Rebirth command.
"""

from pathlib import Path

import pysparkplug as sp

HERE = Path(__file__).parent
T = 1_800_000_000_000


def metric(name, datatype, value, alias=None):
    return sp.Metric(timestamp=T, name=name, datatype=datatype, value=value, alias=alias)


def write(name, message):
    (HERE / name).write_bytes(message.encode())


BD_SEQ = 3

write(
    "nbirth.bin",
    sp.NBirth(
        timestamp=T,
        seq=0,
        metrics=(
            metric("bdSeq", sp.DataType.INT64, BD_SEQ),
            metric("Node Control/Rebirth", sp.DataType.BOOLEAN, False),
            metric("Properties/Hardware", sp.DataType.STRING, "press controller"),
            metric("Temperature", sp.DataType.DOUBLE, 21.5, alias=1),
        ),
    ),
)
write("ndeath.bin", sp.NDeath(timestamp=T, bd_seq_metric=metric("bdSeq", sp.DataType.INT64, BD_SEQ)))
write("ndeath-earlier.bin", sp.NDeath(timestamp=T, bd_seq_metric=metric("bdSeq", sp.DataType.INT64, BD_SEQ - 1)))
write(
    "dbirth.bin",
    sp.DBirth(timestamp=T, seq=1, metrics=(metric("Speed", sp.DataType.FLOAT, 1450.0, alias=2),)),
)
write("ndata.bin", sp.NData(timestamp=T, seq=2, metrics=(metric(None, sp.DataType.DOUBLE, 22.0, alias=1),)))
write("ddeath.bin", sp.DDeath(timestamp=T, seq=3))

request = HERE / "rebirth-request.bin"
if request.exists():
    command = sp.NCmd.decode(request.read_bytes())
    (rebirth,) = command.metrics
    assert rebirth.name == "Node Control/Rebirth" and rebirth.value is True, command
    print("willwatch's rebirth request decodes:", command)
