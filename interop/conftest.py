"""Prints how long each real broker took to start, at the end of the run."""

import brokers


def pytest_terminal_summary(terminalreporter):
    if brokers.START_TIMES:
        terminalreporter.write_sep("-", "broker start times")
        for name, seconds in sorted(brokers.START_TIMES.items()):
            terminalreporter.write_line(f"{name}: {seconds:.2f} s to accept MQTT connections")
