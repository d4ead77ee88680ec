#!/usr/bin/python3
"""Downloads one torrent with python3-libtorrent and keeps seeding it.

Usage: lt_client.py TORRENT SAVE_DIR LISTEN_IP:PORT

Run by cmd/fileshare's tracker client test inside a private network
namespace. DHT, LSD, UPnP and NAT-PMP are off, and the session starts
without the default plugins, so ut_pex is absent too: the tracker is the
only way this client learns of peers. Every half second it prints one JSON
line when its status changes: progress, state, the peers it has dialled or
talked to (peers_seen: every one came from a tracker reply), and the last
tracker messages with the seconds since start, so the test can poll the
log and a failure shows what happened.
It runs until killed.
"""
import json
import os
import sys
import time

import libtorrent as lt


def main():
    torrent, save_dir, listen = sys.argv[1:4]
    settings = {
        "listen_interfaces": listen,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.connect_notification
        | lt.alert.category_t.status_notification,
        "user_agent": "fileshare-test libtorrent/" + lt.__version__,
    }
    # A test that reads the tracker's books needs re-announces sooner
    # than libtorrent's default floor of 5 minutes.
    if os.environ.get("LT_MIN_ANNOUNCE_INTERVAL"):
        settings["min_announce_interval"] = int(os.environ["LT_MIN_ANNOUNCE_INTERVAL"])
    # flags=0: no default plugins, so no ut_pex (peer exchange).
    ses = lt.session(settings, flags=0)
    start = time.monotonic()
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save_dir
    h = ses.add_torrent(params)
    seen = set()
    tracker_msgs = []
    last = None
    while True:
        for a in ses.pop_alerts():
            if isinstance(a, lt.peer_connect_alert):
                seen.add(a.endpoint[0])
            if isinstance(a, (lt.tracker_reply_alert, lt.tracker_error_alert,
                              lt.tracker_warning_alert, lt.tracker_announce_alert)):
                tracker_msgs.append("%.1fs %s" % (time.monotonic() - start, a.message()))
                tracker_msgs = tracker_msgs[-16:]
        s = h.status()
        for p in h.get_peer_info():
            seen.add(p.ip[0])
        line = json.dumps({
            "progress": s.progress,
            "state": str(s.state),
            "is_seeding": s.is_seeding,
            "peers_seen": sorted(seen),
            "tracker": tracker_msgs,
        })
        if line != last:
            print(line, flush=True)
            last = line
        time.sleep(0.5)


if __name__ == "__main__":
    main()
