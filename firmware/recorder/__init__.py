"""The counter recorder (DESIGN.md §3): the state machine between the button, the sign and the
stored segments, in parts —

    machine   the state machine (``Recorder``): its life cycle, transitions, timers and faults
    commands  what a press of the button or a control-socket command asks of it
    state     its states, faults, the status light's pattern and the status snapshot
    notice    Art. 4(2): the sign proven lit for ``notice.delay``, the announcement, the gate
              that admits nothing captured while the sign is dark
    health    one watcher per capture device: stalls, restarts, devices that come and go
    writer    the media thread, fed typed messages: the only writer of the store
"""

from firmware.recorder.errors import RecorderError, RecorderRefused
from firmware.recorder.machine import Recorder
from firmware.recorder.state import Fault, State

__all__ = ["Fault", "Recorder", "RecorderError", "RecorderRefused", "State"]
