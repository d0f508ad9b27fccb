import DynRegProtocol
import DynRegStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// `POST /device/register` and `POST /register/dev`.
///
/// Business errors answer HTTP 200 with the protocol's envelope: the official Python SDK reads the error only
/// from a 200 response. No device input yields a 500.
struct DeviceRoutes<Store: RegistrationStore>: Sendable {
    let service: RegistrationService<Store>
    let maxBodySize: Int

    static var signatureHeader: HTTPField.Name { HeaderNames.signature }
    private static var algorithmHeader: HTTPField.Name { HeaderNames.algorithm }
    private static var timestampHeader: HTTPField.Name { HeaderNames.timestamp }
    private static var nonceHeader: HTTPField.Name { HeaderNames.nonce }

    /// The request's body, or why the protocol refuses it before reading it to its end: a head it cannot read, a
    /// body too large or cut short.
    private enum Admission {
        case body(ByteBuffer)
        case refused(RegistrationResult)
    }

    private func admit(_ request: Request) async -> Admission {
        // A second `Host` header: which one would be signed?
        guard request.headers[values: HeaderNames.host].isEmpty else {
            return .refused(.refused(.invalidParameter, message: "the request has more than one Host header"))
        }
        do {
            return .body(try await request.body.collect(upTo: maxBodySize))
        } catch is NIOTooManyBytesError {
            return .refused(.refused(.invalidParameter, message: "the body is larger than \(maxBodySize) bytes"))
        } catch {
            return .refused(.refused(.invalidParameter, message: "the body could not be read: it ended early"))
        }
    }

    func register(on router: Router<DynRegRequestContext>) {
        router.post(RouterPath(RegistrationPath.current)) { request, context -> Response in
            await serve(request, context, RegistrationPath.current, envelope: Self.current) { body in
                let input = CurrentRegistrationInput(
                    hostHeader: request.head.authority,
                    algorithm: request.headers[Self.algorithmHeader],
                    timestamp: request.headers[Self.timestampHeader],
                    nonce: request.headers[Self.nonceHeader],
                    signature: request.headers[Self.signatureHeader],
                    body: body)
                return await service.register(input, remoteAddress: context.remoteAddressText, logger: context.logger)
            }
        }
        // The C SDK labels this JSON body x-www-form-urlencoded: the content type is ignored on purpose.
        router.post(RouterPath(RegistrationPath.legacy)) { request, context -> Response in
            await serve(request, context, RegistrationPath.legacy, envelope: Self.legacy) { body in
                await service.registerLegacy(
                    body: body, remoteAddress: context.remoteAddressText, logger: context.logger)
            }
        }
    }

    /// One registration request: admitted (``admit(_:)``), its body turned into a result by `register`, and the
    /// result put in the endpoint's `envelope` with a fresh request id.
    private func serve(
        _ request: Request, _ context: DynRegRequestContext, _ endpoint: String,
        envelope: (RegistrationResult, String) -> Response,
        _ register: ([UInt8]) async -> RegistrationResult
    ) async -> Response {
        let requestId = Secrets.requestId()
        switch await admit(request) {
        case .refused(let refusal):
            service.refusedUnread(refusal, endpoint: endpoint, remoteAddress: context.remoteAddressText)
            return Self.refuse(envelope(refusal, requestId), context)
        case .body(let body):
            return Self.answer(envelope(await register(Array(buffer: body)), requestId), to: request, context)
        }
    }

    /// An answer to a request the server did not read to its end: the connection closes both ways after it, keep-alive
    /// or not, rather than read the rest of a body nobody wants.
    private static func refuse(_ response: Response, _ context: DynRegRequestContext) -> Response {
        response.closingConnection(context.channel, stopReading: true)
    }

    /// The embedded C SDK reads an answer until the connection closes or 2 s pass (PROTOCOL.md §5), so a
    /// registration answer closes the connection unless the request asked, in so many words, to keep it.
    private static func answer(_ response: Response, to request: Request, _ context: DynRegRequestContext) -> Response {
        keepsAlive(request.headers) ? response : response.closingConnection(context.channel)
    }

    /// Whether a `Connection` header lists `keep-alive`, in any case, on bytes (Foundation's case-insensitive
    /// comparison showed in the registration profile).
    static func keepsAlive(_ headers: HTTPFields) -> Bool {
        headers[values: .connection].contains { value in
            value.utf8.split(separator: UInt8(ascii: ",")).contains { token in
                guard let first = token.firstIndex(where: { !ASCII.isBlank($0) }),
                    let last = token.lastIndex(where: { !ASCII.isBlank($0) })
                else { return false }
                return token[first...last].lazy.map(ASCII.lowercased).elementsEqual("keep-alive".utf8)
            }
        }
    }

    private static func current(_ result: RegistrationResult, _ requestId: String) -> Response {
        let reply: RegistrationReply
        switch result {
        case .issued(let payload, let created):
            let state = created ? RegistrationReply.stateCreated : RegistrationReply.stateExisting
            reply = .success(payload, requestId: requestId, state: state)
        case .refused(let code, let message): reply = .failure(code: code.code, message: message, requestId: requestId)
        }
        return .json(status: .ok, bytes: reply.encodedJSON())
    }

    private static func legacy(_ result: RegistrationResult, _ requestId: String) -> Response {
        let reply: LegacyRegistrationReply
        switch result {
        case .issued(let payload, _): reply = .success(payload, requestId: requestId)
        case .refused(let code, let message):
            reply = .failure(code: code.legacyCode, message: message, requestId: requestId)
        }
        return .json(status: .ok, bytes: reply.encodedJSON())
    }
}

/// The header names, parsed once rather than on every request (a generic type cannot store static properties).
private enum HeaderNames {
    static let signature = HTTPField.Name(DeviceRequestHeader.signature)!
    static let algorithm = HTTPField.Name(DeviceRequestHeader.algorithm)!
    static let timestamp = HTTPField.Name(DeviceRequestHeader.timestamp)!
    static let nonce = HTTPField.Name(DeviceRequestHeader.nonce)!
    /// The HTTP/1 `Host` header: the first is the request's authority, any further one stays among the fields.
    static let host = HTTPField.Name("Host")!
}
