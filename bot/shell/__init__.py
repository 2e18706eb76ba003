"""The terminal chat: the real Bolt app and handlers, driven from a terminal instead of Slack.

- :mod:`bot.shell.webapi`: a small Slack Web API on 127.0.0.1 that keeps what the bot posts
- :mod:`bot.shell.payloads`: signed slash-command / block_actions / view_submission requests
- :mod:`bot.shell.render` and :mod:`bot.shell.mrkdwn`: Block Kit and mrkdwn as plain text
- :mod:`bot.shell.console`: the read-eval-print loop (``pgsessions shell``): its commands, who and where
- :mod:`bot.shell.screen`: what the terminal shows of the local Slack, with numbered buttons
- :mod:`bot.shell.forms`: filling in the bot's forms, confirming and choosing on a click
- :mod:`bot.shell.terminal`: lines in and out (readline on a terminal, echo for a script)
- :mod:`bot.shell.demo`: a throw-away primary + standby with trouble in them (``make demo``)
"""
