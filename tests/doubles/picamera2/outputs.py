"""picamera2.outputs.Output, as in picamera2/outputs/output.py (the parts encoders use)."""


class Output:
    def __init__(self, pts=None):
        self.recording = False
        self.ptsoutput = pts
        self.needs_pacing = False
        self.needs_add_stream = False

    def start(self):
        self.recording = True

    def stop(self):
        self.recording = False

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        pass

    def _add_stream(self, encoder_stream, *args, **kwargs):
        pass
