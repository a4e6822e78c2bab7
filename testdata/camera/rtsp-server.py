#!/usr/bin/python3
"""RTSP server for Takt's camera tests (GStreamer's gst-rtsp-server, Debian packages
python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good and -ugly).

    rtsp-server.py PORT [WIDTH HEIGHT FPS]

serves a live H.264 test pattern at rtsp://127.0.0.1:PORT/cam and prints "ready" once it
listens. Stop it with SIGKILL to cut the stream, SIGSTOP to freeze it.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    port = sys.argv[1]
    width, height, fps = (sys.argv[2:5] + ["320", "240", "15"][len(sys.argv[2:5]):])
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        sys.exit(2)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
