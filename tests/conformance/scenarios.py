"""The conformance scenario list: written once, run in every cell of the matrix.

A cell is a host (execnet-rs or the execnet package) driving a worker (ours or
execnet's) over a transport. Each scenario is a list of steps that a host runner
interprets; values are plain Python objects, exported to the Rust runner with
execnet.dumps (see export.py). A channel named in a value is written ("$channel",
NAME); a step names the channel it acts on ("main" is the one remote_exec opened).

Steps:
  ("exec", ch, source)              remote_exec(source) -> channel ch
  ("newchannel", ch)                gateway.newchannel() -> channel ch
  ("send", ch, value)               ch.send(value)
  ("receive", ch, expected)         ch.receive() equals expected (sets in any order);
                                    expected ("$channel", NAME) binds a received channel
  ("receive_error", ch, text)       ch.receive() raises a remote error containing text
  ("receive_eof", ch)               ch.receive() ends: the channel was closed normally
  ("receive_timeout", ch, seconds)  ch.receive(timeout) times out
  ("receive_lost", ch)              ch.receive() fails: the gateway is gone
  ("waitclose", ch)                 ch.waitclose() returns normally
  ("waitclose_error", ch, text)     ch.waitclose() raises a remote error containing text
  ("close", ch) / ("close_error", ch, text)
  ("callback", ch, expected_items)  setcallback with an endmarker; the items received
                                    until the end, endmarker excluded, equal expected
  ("status", numexecuting)          remote_status(): numexecuting equals the number
                                    (None: any), and numchannels/execmodel are there
  ("rinfo",)                        _rinfo(): pid, executable, cwd, platform, version_info
  ("terminate",)                    the gateway is exited

"skip" maps a cell property to the reason a scenario does not apply there: a known,
documented difference (README "Differences from execnet").
"""

ECHO = "for item in channel:\n    channel.send(item)\n"

VALUES = [
    None, True, False,
    0, 1, -1, 2**31 - 1, -(2**31), 2**31, 2**63 - 1, 2**63, 2**64, 2**100,
    1.5, -0.0, 1e300, float("inf"), float("-inf"), float("nan"),
    1 + 2j, -0.5j,
    "", "ascii", "\u00e9\u20ac\U0001f600", "\x00\n\t", "x" * 10000,
    b"", bytes(range(256)), b"\x00" * 100000,
    [], [1, [2, [3, []]]], (), (1,), (1, "a", None), ((1, 2), (3,)),
    {}, {"a": 1}, {(1, 2): [3], frozenset({1}): b"x", 3: None, "k": {"nested": ()}},
    set(), {1, 2, 3}, {"a", (1, 2)}, frozenset(), frozenset({"a", 1}),
    [{"list": [(), {}, set()]}, (frozenset({(1, 2)}),)],
]

SCENARIOS = [
    {
        "name": "echo every value type",
        "steps": [("exec", "main", ECHO)]
        + [step for v in VALUES for step in (("send", "main", v), ("receive", "main", v))]
        + [("close", "main"), ("waitclose", "main")],
    },
    {
        "name": "ints below -2**31",
        "steps": [
            ("exec", "main", ECHO),
            ("send", "main", -(2**31) - 1),
            ("receive", "main", -(2**31) - 1),
            ("send", "main", -(2**63)),
            ("receive", "main", -(2**63)),
            ("send", "main", -(2**100)),
            ("receive", "main", -(2**100)),
        ],
        "skip": {
            "worker:execnet": "execnet 2.1.2 cannot dump ints below -2**31",
            "host:execnet": "execnet 2.1.2 cannot dump ints below -2**31",
        },
    },
    {
        "name": "remote sends, code ends, channel closes",
        "steps": [
            ("exec", "main", "channel.send(1)\nchannel.send('two')"),
            ("receive", "main", 1),
            ("receive", "main", "two"),
            ("receive_eof", "main"),
            ("waitclose", "main"),
        ],
    },
    {
        "name": "remote error in receive",
        "steps": [
            ("exec", "main", "def f():\n    raise ValueError('conformance boom')\nf()"),
            ("receive_error", "main", "ValueError: conformance boom"),
        ],
    },
    {
        "name": "remote error in waitclose",
        "steps": [
            ("exec", "main", "raise ValueError('conformance boom')"),
            ("waitclose_error", "main", "ValueError: conformance boom"),
        ],
    },
    {
        "name": "item before a remote error is received first",
        "steps": [
            ("exec", "main", "channel.send(7)\nraise KeyError('late')"),
            ("receive", "main", 7),
            ("receive_error", "main", "KeyError"),
        ],
    },
    {
        "name": "syntax error is a remote error",
        "steps": [("exec", "main", "def (:"), ("waitclose_error", "main", "SyntaxError")],
    },
    {
        "name": "host close wakes a remote receive with EOFError",
        "steps": [
            ("exec", "main", "channel.send('ready')\ntry:\n    channel.receive()\nexcept EOFError:\n    pass\n"),
            ("receive", "main", "ready"),
            ("close", "main"),
            ("waitclose", "main"),
        ],
    },
    {
        "name": "host close_error reaches remote code as RemoteError",
        "steps": [
            ("newchannel", "sub"),
            (
                "exec",
                "main",
                "sub = channel.receive()\n"
                "try:\n    sub.receive()\nexcept sub.RemoteError as e:\n    channel.send('got: ' + str(e).strip())\n",
            ),
            ("send", "main", ("$channel", "sub")),
            ("close_error", "sub", "host refuses"),
            ("receive", "main", "got: host refuses"),
        ],
    },
    {
        "name": "remote receive timeout",
        "steps": [
            (
                "exec",
                "main",
                "try:\n    channel.receive(0.05)\nexcept channel.TimeoutError:\n    channel.send('timeout')\n",
            ),
            ("receive", "main", "timeout"),
            ("waitclose", "main"),
        ],
    },
    {
        "name": "host receive timeout, then the item",
        "steps": [
            ("exec", "main", "channel.send(channel.receive())"),
            ("receive_timeout", "main", 0.1),
            ("send", "main", "late"),
            ("receive", "main", "late"),
        ],
    },
    {
        "name": "callback with endmarker gets every item in order",
        "steps": [
            ("exec", "main", "for i in range(300):\n    channel.send(i)\n"),
            ("callback", "main", list(range(300))),
        ],
    },
    {
        "name": "host channel sent inside data",
        "steps": [
            ("newchannel", "sub"),
            ("exec", "main", "word, sub = channel.receive()\nsub.send(sub.receive() * 2)\n"),
            ("send", "main", ["wrapped", ("$channel", "sub")]),
            ("send", "sub", 21),
            ("receive", "sub", 42),
            ("waitclose", "main"),
        ],
    },
    {
        "name": "remote-made channel sent to the host",
        "steps": [
            (
                "exec",
                "main",
                "mine = channel.gateway.newchannel()\nchannel.send(mine)\nmine.send(mine.receive() + 1)\nmine.close()\n",
            ),
            ("receive", "main", ("$channel", "mine")),
            ("send", "mine", 41),
            ("receive", "mine", 42),
            ("receive_eof", "mine"),
            ("waitclose", "main"),
        ],
    },
    {
        "name": "many channels interleaved",
        "steps": [("exec", "c%d" % i, "channel.send(channel.receive() * %d)" % i) for i in range(1, 9)]
        + [("send", "c%d" % i, i) for i in range(1, 9)]
        + [("receive", "c%d" % i, i * i) for i in range(8, 0, -1)],
    },
    {
        "name": "STATUS while code runs and after",
        "steps": [
            ("exec", "main", "channel.send('running')\nchannel.receive()\n"),
            ("receive", "main", "running"),
            ("status", 1),
            ("send", "main", None),
            ("waitclose", "main"),
            ("status", 0),
        ],
    },
    {
        "name": "rinfo",
        "steps": [("rinfo",)],
    },
    {
        "name": "terminate ends a blocked remote and the channel",
        "steps": [
            ("exec", "main", "channel.send('blocked')\nchannel.receive()\n"),
            ("receive", "main", "blocked"),
            ("terminate",),
            ("receive_lost", "main"),
        ],
    },
]
