"""Japanese first, English on request: the UI's words in both languages.

The language is chosen by the ``lang`` cookie (set from the switch in the page header)
and defaults to Japanese, whatever the browser says: the appliance is used in Japanese
city offices.
"""

from __future__ import annotations

from flask import request

LANGUAGES = ("ja", "en")

MESSAGES: dict[str, tuple[str, str]] = {
    # key: (Japanese, English)
    "app.title": ("業務記録システム kiroku", "kiroku counter recorder"),
    "counter.title": ("仮想窓口", "Virtual counter"),
    "counter.intro": (
        "シミュレーション中のハードウェアです。下のボタンは窓口の記録ボタンと同じ GPIO ピンを操作します。"
        "短く押すと録画開始・停止、長押しでトラブル等のマークを付けます。",
        "This is simulated hardware. The button below drives the same GPIO pin as the counter's record button: "
        "a short press starts or stops recording, a long press marks an incident.",
    ),
    "counter.button": ("記録ボタン", "Record button"),
    "counter.button_hint": ("押して離す：開始／停止　長押し：マーク", "Press and release: start/stop · Hold: mark"),
    "sign.text": ("録画中", "録画中"),
    "sign.caption": ("表示灯（録画中）", "The 「録画中」 sign"),
    "sign.lit": ("点灯", "lit"),
    "sign.off": ("消灯", "off"),
    "sign.not_lit": ("指令は点灯ですが点いていません", "commanded on but not lit"),
    "light.caption": ("状態ランプ", "Status light"),
    "state.caption": ("記録装置の状態", "Recorder state"),
    "state.idle": ("待機中", "Idle"),
    "state.notice": ("告知中（まもなく録画開始）", "Notice (recording starts shortly)"),
    "state.recording": ("録画中", "Recording"),
    "state.stopping": ("停止処理中", "Stopping"),
    "state.fault": ("異常", "Fault"),
    "light.off": ("消灯", "off"),
    "light.ready": ("待機", "ready"),
    "light.notice": ("速い点滅（告知）", "fast blink (notice)"),
    "light.recording": ("点灯（録画）", "on (recording)"),
    "light.degraded": ("点灯・短い消灯（録画中・一部異常）", "on with gaps (recording, degraded)"),
    "light.fault": ("遅い点滅（異常）", "slow blink (fault)"),
    "rec.current": ("現在の録画", "Current recording"),
    "rec.last": ("直前の録画", "Last recording"),
    "rec.none": ("なし", "none"),
    "rec.seconds": ("秒", "s"),
    "rec.segments": ("セグメント", "segments"),
    "rec.marks": ("マーク", "marks"),
    "faults.caption": ("異常", "Faults"),
    "faults.none": ("なし", "none"),
    "warnings.caption": ("注意", "Warnings"),
    "clock.caption": ("時刻", "Clock"),
    "clock.synced": ("同期済み", "synchronised"),
    "clock.unsynced": ("未同期（時刻は参考値）", "NOT synchronised (times are indicative)"),
    "sim.caption": ("障害を試す（シミュレーションのみ）", "Try a fault (simulation only)"),
    "sim.camera_unplug": ("カメラを外す", "Unplug camera"),
    "sim.camera_replug": ("カメラをつなぐ", "Plug camera in"),
    "sim.camera_stall": ("カメラを停止させる", "Stall camera"),
    "sim.camera_hang": ("カメラを固まらせる（再起動が必要）", "Hang camera (needs a restart)"),
    "sim.microphone_unplug": ("マイクを外す", "Unplug microphone"),
    "sim.microphone_replug": ("マイクをつなぐ", "Plug microphone in"),
    "sim.lamp_fail": ("表示灯を断線させる", "Break the sign's lamp"),
    "sim.lamp_repair": ("表示灯を直す", "Repair the sign's lamp"),
    "sim.lamp_flicker": ("表示灯を一瞬消す（接触不良）", "Flicker the sign's lamp (loose contact)"),
    "sim.microphone_stall": ("マイクを停止させる", "Stall microphone"),
    "error.recorder": ("記録装置に接続できません", "Cannot reach the recorder"),
    "nav.lang": ("English", "日本語"),
    "home.title": ("業務記録システム", "Counter recording appliance"),
    "home.real": (
        "この装置の管理画面は準備中です。記録装置の状態は下に表示されます。",
        "The administration pages are not built yet. The recorder's state is shown below.",
    ),
}


def current_language() -> str:
    lang = request.cookies.get("lang", "ja")
    return lang if lang in LANGUAGES else "ja"


def t(key: str) -> str:
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    return pair[LANGUAGES.index(current_language())]


def catalog() -> dict[str, str]:
    """All messages in the current language (the page's script uses them)."""
    i = LANGUAGES.index(current_language())
    return {key: pair[i] for key, pair in MESSAGES.items()}
