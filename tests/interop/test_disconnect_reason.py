"""A DISCONNECT from the broker carries a reason code that deployed clients can read (§3.14).
paho-mqtt before 2.2 (the version pinned in requirements.txt is one) reads the reason only
from a DISCONNECT whose Remaining Length is above 2, and reports anything shorter as "Normal
disconnection"; the broker's DISCONNECT carries the reason's name as Reason String, so the
client sees the real code.
"""

from mqttclients import V5, WAIT, new_client_id


def test_paho_reads_session_taken_over_0x8e_mqtt_3_1_4_3(clients):
    """MQTT-3.1.4-3: a second connection with the same client id takes over; the first
    client's on_disconnect reports 0x8E Session taken over, not Normal disconnection."""
    cid = new_client_id("t")
    first = clients.paho_connected(V5, client_id=cid)
    clients.paho_connected(V5, client_id=cid)
    assert first.disconnected.wait(WAIT), "the first connection was not ended"
    rc = first.disconnect_rc
    assert rc.value == 0x8E, f"reason seen by paho: {rc} ({rc.value:#04x})"
    assert rc.is_failure
