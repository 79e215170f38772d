"""The call recorder (Art. 2(1)(2)): external calls taken passively off the PBX's SIP trunk.

A mirrored switch port shows the recorder every packet between the PBX and the carrier.
The layers, bottom up, each knowing nothing of the ones above it:

- ``net``: frames → IP datagrams (fragments reassembled) → UDP payloads and TCP byte
  streams; the pcap file format for replayed and saved captures.
- ``capture``: an AF_PACKET socket with a kernel BPF filter (the live source).
- ``sip``: SIP messages (compact headers, TCP framing) and their SDP bodies.
- ``rtp``: RTP packets, the G.711 tables and other codecs through PyAV, and one jitter
  buffer per media stream (reordering, duplicates, losses filled with silence).
- ``numbers``: the numbers as dialled, as E.164 and as shown to a clerk.
- ``tracker``: SIP dialogs by Call-ID and tags, their media paired through the SDP.
- ``render``: a call's two sides as one stereo track (left: the external party, right:
  the city), cut into sealed segments of record class ``call``.
- ``recorder``: the ``kiroku call-recorder`` process and its index of calls.
"""
