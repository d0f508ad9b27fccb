import DynRegStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mustache
import NIOCore

/// The console's templates and static files, compiled into the binary from `Resources/` (SwiftPM's
/// `embedInCode`): they stay files in the source tree, and the binary runs without a resource bundle beside it.
struct ConsoleAssets: Sendable {
    let library: MustacheLibrary
    /// `console.css` and `console.js`: name → (content type, bytes).
    let files: [String: (contentType: String, bytes: [UInt8])]

    /// Template name → its text; SwiftPM names each `file_name_extension`.
    static let templateSources: [String: [UInt8]] = [
        "layout-head": PackageResources.layout_head_mustache, "layout-foot": PackageResources.layout_foot_mustache,
        "sign-in": PackageResources.sign_in_mustache, "overview": PackageResources.overview_mustache,
        "products": PackageResources.products_mustache, "product": PackageResources.product_mustache,
        "devices": PackageResources.devices_mustache, "device": PackageResources.device_mustache,
        "events": PackageResources.events_mustache, "confirm": PackageResources.confirm_mustache,
        "created-devices": PackageResources.created_devices_mustache, "failure": PackageResources.failure_mustache,
    ]

    init() throws {
        var templates: [String: MustacheTemplate] = [:]
        for (name, bytes) in Self.templateSources {
            templates[name] = try MustacheTemplate(string: String(decoding: bytes, as: UTF8.self))
        }
        library = MustacheLibrary(templates: templates)
        files = [
            "console.css": ("text/css; charset=utf-8", PackageResources.console_css),
            "console.js": ("text/javascript; charset=utf-8", PackageResources.console_js),
        ]
    }

    /// The page `template` inside the layout, every value HTML-escaped by the templates.
    func page(_ template: String, _ page: ConsolePage, status: HTTPResponse.Status = .ok) -> Response {
        var page = page
        page.nav = [page.section: true]
        let html = library.render(page, withTemplate: template) ?? "<!doctype html><title>dynreg</title>"
        return Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: html)))
    }
}

/// What every page shows around its content: the title, the navigation, the signed-in state, the CSRF token of
/// its forms and a flash message. `content` is the page's own model.
struct ConsolePage {
    var title: String
    var section: String
    var signedIn: Bool
    var csrf: String
    var flash: String?
    var error: String?
    var content: Any
    /// `section == "overview"` and so on, for the navigation's current item (set by `page`).
    var nav: [String: Bool] = [:]
    /// Seconds between refreshes (a meta refresh, no script), or nil.
    var refresh: Int?
}

/// A console failure shown to the operator as a page: the status and a message, never a stack.
struct ConsoleFailure: Error {
    var status: HTTPResponse.Status
    var message: String
}

/// Send the browser elsewhere (303 See Other: the next request is a GET).
struct ConsoleRedirect: Error {
    var location: String
}

/// The security headers of every console answer, and the one place a console failure becomes a page.
struct ConsoleMiddleware: RouterMiddleware {
    typealias Context = DynRegRequestContext
    let assets: ConsoleAssets

    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
        + "frame-ancestors 'none'; base-uri 'none'"

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let redirect as ConsoleRedirect {
            response = Response(status: .seeOther, headers: [.location: redirect.location])
        } catch let failure as ConsoleFailure {
            response = failurePage(failure.status, failure.message)
        } catch let error as AdminError {
            response = failurePage(error.code.status, error.message)
        } catch let error as StoreError {
            let admin = AdminError(error)
            response = failurePage(admin.code.status, admin.message)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as any HTTPResponseError {
            response = failurePage(error.status, error.status.reasonPhrase)
        } catch {
            context.logger.error("console request failed", metadata: ["dynreg.error": "\(error)"])
            response = failurePage(.internalServerError, "the store failed; see the server log")
        }
        response.headers[.contentSecurityPolicy] = Self.contentSecurityPolicy
        response.headers[.xFrameOptions] = "DENY"
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[.referrerPolicy] = "no-referrer"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        return response
    }

    private func failurePage(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let page = ConsolePage(
            title: "\(status.code) \(status.reasonPhrase)", section: "", signedIn: false, csrf: "", flash: nil,
            error: nil, content: ["status": "\(status.code) \(status.reasonPhrase)", "message": message])
        return assets.page("failure", page, status: status)
    }
}

extension HTTPField.Name {
    static let xFrameOptions = Self("X-Frame-Options")!
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
    static let contentSecurityPolicy = Self("Content-Security-Policy")!
}

/// `application/x-www-form-urlencoded`, as browsers send forms. A repeated name keeps its first value.
struct FormFields: Sendable {
    private(set) var values: [String: String] = [:]

    init(_ bytes: [UInt8]) {
        for pair in bytes.split(separator: UInt8(ascii: "&")) {
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            let name = Self.decode(parts[0])
            if values[name] == nil { values[name] = parts.count > 1 ? Self.decode(parts[1]) : "" }
        }
    }

    subscript(_ name: String) -> String? { values[name] }

    /// The field trimmed, `nil` when absent or empty.
    func text(_ name: String) -> String? {
        guard let value = values[name]?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty else {
            return nil
        }
        return value
    }

    /// A checkbox: present means on.
    func isOn(_ name: String) -> Bool { values[name] != nil }

    private static func decode(_ bytes: ArraySlice<UInt8>) -> String {
        let text = String(decoding: bytes.map { $0 == UInt8(ascii: "+") ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        return text.removingPercentEncoding ?? text
    }
}
