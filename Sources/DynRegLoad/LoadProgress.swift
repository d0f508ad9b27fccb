import Foundation

/// Progress on stderr: one redrawn line on a terminal, a plain line every 2 s otherwise.
package struct LoadProgress: Sendable {
    package let counters: LoadCounters
    /// Starts each plain line, e.g. `dynreg bench: `.
    package let prefix: String
    package let interactive: Bool

    package init(counters: LoadCounters, prefix: String, interactive: Bool = isatty(STDERR_FILENO) == 1) {
        self.counters = counters
        self.prefix = prefix
        self.interactive = interactive
    }

    /// Reports until cancelled.
    package func run() async {
        let clock = ContinuousClock()
        let started = clock.now
        var lastLine = started
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: .milliseconds(interactive ? 100 : 250))
            } catch {
                break
            }
            let now = clock.now
            if interactive {
                write("\r" + line(elapsed: now - started) + "\u{1B}[K")
            } else if now - lastLine >= .seconds(2) {
                lastLine = now
                write(prefix + line(elapsed: now - started) + "\n")
            }
        }
        if interactive {
            write("\r" + line(elapsed: clock.now - started) + "\u{1B}[K\n")
        }
    }

    /// `[####----] 40/100 (40%)  1234 req/s  ETA 0:05`, without the bar when not interactive.
    package func line(elapsed: Duration) -> String {
        let done = counters.completed
        let total = counters.total
        let seconds = max(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, 1e-3)
        let rate = Double(done) / seconds
        let fraction = Double(done) / Double(total)
        let eta = rate > 0 ? Int((Double(total - done) / rate).rounded(.up)) : 0
        var text = ""
        if interactive {
            let filled = Int(fraction * 30)
            text += "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 30 - filled) + "] "
        }
        text +=
            "\(done)/\(total) (\(Int(fraction * 100))%)  \(Int(rate)) req/s  ETA \(eta / 60):"
            + (eta % 60 < 10 ? "0" : "") + "\(eta % 60)"
        return text
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
