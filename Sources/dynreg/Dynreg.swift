import ArgumentParser
import Foundation

@main
struct Dynreg: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dynreg",
        abstract: "Device dynamic registration: the server, the device client and the debugging tools.",
        subcommands: [
            Serve.self, Sign.self, Payload.self, MQTTCredentialsCommand.self, Register.self, ProductCommand.self,
            DeviceCommand.self, EventsCommand.self, RefusalsCommand.self, Bench.self, MasterKeyCommand.self,
        ]
    )

    /// Errors become one line on stderr, never a stack trace or a usage dump.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
            } else if !(error is ExitCode) {
                let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
                FileHandle.standardError.write(Data("dynreg: \(terminalSafe(message))\n".utf8))
            }
            exit(withError: code == .success ? nil : ExitCode(code.rawValue))
        }
    }
}

/// A failure the user can act on, printed as one line.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Reads a secret from an option, else an environment variable, so it need not appear in `ps`.
func secret(_ value: String?, environment name: String, option: String) throws -> String {
    if let value { return value }
    if let value = ProcessInfo.processInfo.environment[name], !value.isEmpty { return value }
    throw CLIError("missing \(option) (or set \(name))")
}

/// A JSON string literal, `/` unescaped, for one-line machine output.
func jsonObject(_ fields: KeyValuePairs<String, Any>) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    func encode(_ value: Any) -> String {
        switch value {
        case let string as String: return String(decoding: (try? encoder.encode(string)) ?? Data(), as: UTF8.self)
        case let bool as Bool: return bool ? "true" : "false"
        case let int as Int: return String(int)
        case let int as Int64: return String(int)
        case let raw as RawJSON: return raw.text
        default: return "null"
        }
    }
    return "{" + fields.map { "\(encode($0.key)):\(encode($0.value))" }.joined(separator: ",") + "}"
}

/// Already-encoded JSON to embed as is.
struct RawJSON { var text: String }
