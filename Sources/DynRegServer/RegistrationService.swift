import Crypto
import DynRegCA
package import DynRegProtocol
package import DynRegStore
import Foundation
package import Logging

/// What a device asked for on `POST /device/register`, as received: nothing parsed or trusted yet.
package struct CurrentRegistrationInput: Sendable {
    package var hostHeader: String?
    package var algorithm: String?
    package var timestamp: String?
    package var nonce: String?
    package var signature: String?
    package var body: [UInt8]

    package init(
        hostHeader: String?, algorithm: String?, timestamp: String?, nonce: String?, signature: String?, body: [UInt8]
    ) {
        self.hostHeader = hostHeader
        self.algorithm = algorithm
        self.timestamp = timestamp
        self.nonce = nonce
        self.signature = signature
        self.body = body
    }
}

/// The outcome of a registration, before it is put into either protocol's envelope.
package enum RegistrationResult: Sendable, Hashable {
    /// `created`: the registration created the device (IoT Hub's `State` 0, else 1).
    case issued(EncryptedPayload, created: Bool)
    case refused(RegistrationErrorCode, message: String)

    static func refused(_ code: RegistrationErrorCode) -> Self { .refused(code, message: code.defaultMessage) }

    /// What the audit log and the metrics call it: `Success` or the error code.
    var outcome: String {
        switch self {
        case .issued: return RegistrationEvent.success
        case .refused(let code, _): return code.code
        }
    }
}

/// Where a registration's outcome is recorded.
enum AuditTrail: Sendable, Hashable {
    /// The store wrote the event with its decision.
    case recorded
    /// An event row, written after the answer is known: the product secret was proven.
    case event
    /// A count in the per-minute refusal rows (``RefusalTally``): nothing proved the product secret, so the
    /// request may not cost a row. `productId` is the product when it exists, else empty.
    case tally(productId: String)
}

/// Registration and activation rules, independent of HTTP.
package struct RegistrationService<Store: RegistrationStore>: Sendable {
    package let store: Store
    package let timestampWindow: Int64
    package let publicHosts: [String]
    let authorities: CertificateAuthorities
    let clock: @Sendable () -> Date
    /// Told when a re-registration revoked a certificate, for the CRL directory.
    let revocations: RevocationNotifier?
    let metrics: ServerMetrics
    /// Counts the refusals no secret was proven for; `nil` in tests that need none.
    let refusals: RefusalTally?
    /// Rate limits, lockouts and the new-device brake; `nil` in tests that need none.
    let guards: RegistrationGuards?
    /// Store failures are logged at most once a minute, with how many went unlogged.
    private let storeFailures = SampledLog(interval: .seconds(60))

    init(
        store: Store, timestampWindow: Int64, publicHosts: [String], authorities: CertificateAuthorities,
        revocations: RevocationNotifier? = nil, metrics: ServerMetrics = ServerMetrics(),
        refusals: RefusalTally? = nil, guards: RegistrationGuards? = nil,
        clock: @escaping @Sendable () -> Date = Date.init
    ) {
        self.revocations = revocations
        self.metrics = metrics
        self.refusals = refusals
        self.guards = guards
        self.store = store
        self.timestampWindow = timestampWindow
        self.publicHosts = publicHosts
        self.authorities = authorities
        self.clock = clock
    }

    // MARK: Device endpoints

    package func register(
        _ input: CurrentRegistrationInput, remoteAddress: String, logger: Logger
    ) async
        -> RegistrationResult
    {
        let started = ContinuousClock.now
        let result = await registerCurrent(input, remoteAddress: remoteAddress, logger: logger)
        counted(result, endpoint: RegistrationPath.current, since: started)
        return result
    }

    package func registerLegacy(body bytes: [UInt8], remoteAddress: String, logger: Logger) async -> RegistrationResult
    {
        let started = ContinuousClock.now
        let result = await registerLegacyUncounted(body: bytes, remoteAddress: remoteAddress, logger: logger)
        counted(result, endpoint: RegistrationPath.legacy, since: started)
        return result
    }

    private func counted(_ result: RegistrationResult, endpoint: String, since started: ContinuousClock.Instant) {
        metrics.registration(endpoint: endpoint, outcome: result.outcome, duration: ContinuousClock.now - started)
    }

    /// A request the HTTP edge refused before reading it (too large, two `Host` headers): counted like the others.
    func refusedUnread(_ result: RegistrationResult, endpoint: String, remoteAddress: String) {
        metrics.registration(endpoint: endpoint, outcome: result.outcome, duration: nil)
        refusals?.record(productId: "", endpoint: endpoint, outcome: result.outcome, remoteAddress: remoteAddress)
    }

    /// A request too malformed to name a product: counted in the refusal rows, never a row of its own.
    private func malformed(_ message: String, endpoint: String, remoteAddress: String) -> RegistrationResult {
        let result = RegistrationResult.refused(.invalidParameter, message: message)
        refusals?.record(productId: "", endpoint: endpoint, outcome: result.outcome, remoteAddress: remoteAddress)
        return result
    }

    private func registerCurrent(
        _ input: CurrentRegistrationInput, remoteAddress: String, logger: Logger
    ) async -> RegistrationResult {
        func malformed(_ message: String) -> RegistrationResult {
            self.malformed(message, endpoint: RegistrationPath.current, remoteAddress: remoteAddress)
        }
        guard let body = try? RegistrationRequestBody(decoding: input.body) else {
            return malformed("the body must be a JSON object with ProductId and DeviceName")
        }
        guard let algorithmHeader = input.algorithm, let algorithm = SignatureAlgorithm(headerValue: algorithmHeader)
        else {
            return malformed("X-TC-Algorithm must be hmacsha256 or hmacsha1")
        }
        guard let timestampText = input.timestamp, let timestamp = DecimalField.parse(timestampText) else {
            return malformed("X-TC-Timestamp must be a decimal Unix time")
        }
        guard let nonceText = input.nonce, let nonce = DecimalField.parse(nonceText) else {
            return malformed("X-TC-Nonce must be a non-negative decimal integer")
        }
        guard let signature = input.signature, !signature.isEmpty else {
            return malformed("X-TC-Signature is missing")
        }
        var hosts: [String] = []
        if let header = input.hostHeader { hosts.append(CanonicalHost.fromHostHeader(header)) }
        hosts.append(contentsOf: publicHosts.filter { !hosts.contains($0) })
        let signed = SignedRequest(
            canonicalHost: "", algorithm: algorithm, timestamp: timestampText, nonce: nonceText, body: input.body)
        // A retry is the same request to the byte: every header the signature covers and the body.
        let digest = Self.requestDigest(
            RegistrationPath.current, [algorithmHeader, timestampText, nonceText, signature], input.body)
        let (result, trail) = await admit(
            productId: body.productId, deviceName: body.deviceName, timestamp: timestamp, nonce: nonce,
            request: .init(csr: body.csr, clientCert: body.clientCert.flatMap { $0.isEmpty ? nil : $0 }),
            remoteAddress: remoteAddress, endpoint: RegistrationPath.current, digest: digest, logger: logger
        ) { secret in
            var candidate = signed
            return hosts.contains { host in
                candidate.canonicalHost = host
                return candidate.verify(signature: signature, productSecret: secret)
            }
        }
        await audit(
            result, trail: trail, productId: body.productId, deviceName: body.deviceName,
            remoteAddress: remoteAddress, endpoint: RegistrationPath.current, logger: logger)
        return result
    }

    private func registerLegacyUncounted(
        body bytes: [UInt8], remoteAddress: String, logger: Logger
    ) async -> RegistrationResult {
        guard let body = try? LegacyRegistrationRequestBody(decoding: bytes) else {
            return malformed(
                "the body must be a JSON object with productId, deviceName, nonce, timestamp and signature",
                endpoint: RegistrationPath.legacy, remoteAddress: remoteAddress)
        }
        let signed = body.signed
        let (result, trail) = await admit(
            productId: signed.productId, deviceName: signed.deviceName, timestamp: signed.timestamp,
            nonce: signed.nonce, request: .init(), remoteAddress: remoteAddress, endpoint: RegistrationPath.legacy,
            digest: Self.requestDigest(RegistrationPath.legacy, [], bytes), logger: logger
        ) { secret in
            signed.verify(signature: body.signature, productSecret: secret)
        }
        await audit(
            result, trail: trail, productId: signed.productId, deviceName: signed.deviceName,
            remoteAddress: remoteAddress, endpoint: RegistrationPath.legacy, logger: logger)
        return result
    }

    /// The checks both protocols share, in an order that reveals nothing to a caller without the product secret
    /// beyond whether the product exists. The trail says where the outcome is to be recorded.
    /// The rules after the signature are `RegistrationRules.admit`'s, then the store's `RegistrationRules.decide`.
    private func admit(
        productId: String, deviceName: String, timestamp: Int64, nonce: Int64, request: CertificateRequest,
        remoteAddress: String, endpoint: String, digest: [UInt8], logger: Logger, verify: (String) -> Bool
    ) async -> (result: RegistrationResult, trail: AuditTrail) {
        if let guards, !guards.admitAddress(remoteAddress) {
            metrics.refusal(.addressRate)
            return (.refused(.requestLimitExceeded), .tally(productId: ""))
        }
        guard DeviceNameRules.isValid(deviceName) else { return (.refused(.deviceNameInvalid), .tally(productId: "")) }
        guard ProductIdRules.isValid(productId) else { return (.refused(.productNotExist), .tally(productId: "")) }
        do {
            guard let product = try await store.productForAdmission(id: productId) else {
                return (.refused(.productNotExist), .tally(productId: ""))
            }
            if let guards, guards.lockouts.isLocked(productId: product.id, address: remoteAddress) {
                metrics.refusal(.lockedOut)
                return (
                    .refused(.requestLimitExceeded, message: RegistrationGuards.lockedOutMessage),
                    .tally(productId: product.id)
                )
            }
            guard verify(product.secret) else {
                await guards?.lockouts.recordFailure(productId: product.id, address: remoteAddress)
                return (.refused(.signatureFailure), .tally(productId: product.id))
            }
            let now = clock()
            if let guards, let refusal = try await brake(guards, product: product, deviceName: deviceName, now: now) {
                return refusal
            }
            let replayExpiry: Date?
            switch RegistrationRules.admit(product: product, timestamp: timestamp, now: now, window: timestampWindow) {
            case .proceed(let expiry): replayExpiry = expiry
            case .refuse(let code): return (.refused(code), .event)
            }
            let credential: DeviceCredential
            let issued: IssuedCredential
            switch product.authType {
            case .key:
                if request.clientCert != nil {
                    return (
                        .refused(.clientCertInvalid, message: "this product's devices authenticate with keys"), .event
                    )
                }
                let psk = Secrets.psk()
                credential = .key(psk: psk)
                issued = .key(psk: psk)
            case .certificate:
                switch try await certify(product: product, deviceName: deviceName, request: request, now: now) {
                case .success(let pair):
                    (credential, issued) = pair
                case .failure(let code, let message):
                    return (.refused(code, message: message ?? code.defaultMessage), .event)
                }
            }
            // Encrypted before the store commits: once it has, the audit log says Success, so nothing may fail after.
            let payload = try credential.encrypted(productSecret: product.secret)
            let decision = try await store.register(
                RegistrationAttempt(
                    productId: productId, deviceName: deviceName, timestamp: timestamp, nonce: nonce,
                    replayExpiry: replayExpiry, credential: issued, now: now, remoteAddress: remoteAddress,
                    endpoint: endpoint, repeatable: RepeatableRequest(digest: digest, payload: payload)))
            // Nothing below throws: a store that answered has written the event.
            switch decision {
            case .rejected(let code):
                return (.refused(code), .recorded)
            case .issued(let device, let created):
                // Re-registering a certificate device revoked its previous certificate.
                if case .certificate = issued, !created { revocations?.changed() }
                if device.registrationCount > 1 {
                    metrics.reregistration()
                    // The old credential stops working: what a leaked product secret allows, so it is visible.
                    logger.notice(
                        "a registered device registered again; its previous credential no longer works",
                        metadata: [
                            "dynreg.product.id": "\(productId)", "dynreg.device.name": "\(device.name)",
                            "dynreg.registrations": "\(device.registrationCount)",
                        ])
                }
                return (.issued(payload, created: created), .recorded)
            case .repeated(let first):
                logger.info(
                    "a byte-identical retry got its first answer", metadata: ["dynreg.product.id": "\(productId)"])
                return (.issued(first.payload, created: first.created), .recorded)
            }
        } catch {
            // A store that cannot write (a full disk) fails every request: one line a minute says so, with the count.
            metrics.storeError("register")
            if let suppressed = storeFailures.due() {
                logger.error(
                    "registration failed in the store",
                    metadata: [
                        "dynreg.error": "\(String(reflecting: type(of: error)))",
                        "dynreg.unlogged_failures": "\(suppressed)",
                    ])
            }
            // Counted, not written a row each: the store is what is failing.
            return (.refused(.internalError), .tally(productId: ""))
        }
    }

    /// The product's rate and its new-device brake, once the signature proved the secret: a refusal, or `nil`.
    private func brake(
        _ guards: RegistrationGuards, product: Product, deviceName: String, now: Date
    ) async throws -> (result: RegistrationResult, trail: AuditTrail)? {
        let own = try await guards.productLimits.limits(productId: product.id)
        guard guards.admitProduct(product.id, own) else {
            metrics.refusal(.productRate)
            return (.refused(.requestLimitExceeded), .tally(productId: product.id))
        }
        // Only auto-create adds names; a known device (pre-created or registered) goes on.
        guard let perHour = own.newDevicesPerHour, product.autoCreate,
            try await store.device(productId: product.id, deviceName: deviceName) == nil,
            try await store.devicesCreated(productId: product.id, since: now.addingTimeInterval(-3600)) >= perHour
        else { return nil }
        metrics.refusal(.newDeviceBrake)
        let refusal = RegistrationResult.refused(.deviceQuota, message: RegistrationGuards.brakeMessage(perHour))
        return (refusal, guards.brakeEventDue(product.id, now: now) ? .event : .tally(productId: product.id))
    }

    /// SHA-256 over the endpoint, then each part with its length, so that no two requests share a digest.
    static func requestDigest(_ endpoint: String, _ headers: [String], _ body: [UInt8]) -> [UInt8] {
        var hash = SHA256()
        func add(_ part: some Collection<UInt8>) {
            withUnsafeBytes(of: UInt64(part.count).bigEndian) { hash.update(bufferPointer: $0) }
            hash.update(data: Array(part))
        }
        add(endpoint.utf8)
        for header in headers { add(header.utf8) }
        add(body)
        return Array(hash.finalize())
    }

    /// What a certificate device sent besides its name: a CSR (dynreg's extension) or a certificate of its own.
    struct CertificateRequest {
        var csr: String?
        var clientCert: String?
    }

    private enum Certification {
        case success((DeviceCredential, IssuedCredential))
        case failure(RegistrationErrorCode, message: String? = nil)
    }

    /// A certificate the device brings (`ClientCert`), checked and recorded as if issued; the answer then carries
    /// neither certificate nor key. Trusted: the product's operator CAs, and its own CA.
    private func acceptDeviceCertificate(
        _ pem: String, product: Product, deviceName: String, now: Date
    ) async throws -> Certification {
        let trusted = product.trustedDeviceCAs + [product.certificateAuthority?.certificatePEM].compactMap { $0 }
        let certificate: IssuedCertificate
        do {
            certificate = try await DeviceCertificates.verify(
                pem: pem, trusted: trusted, productId: product.id, deviceName: deviceName, now: now)
        } catch {
            return .failure(.clientCertInvalid, message: error.description)
        }
        let answer = DeviceCredential.certificate(clientCert: "", clientKey: "")
        if let known = try await store.certificate(fingerprint: certificate.fingerprint) {
            // Registered before: the same device may register again with it; a revoked one stays revoked.
            guard known.productId == product.id, known.deviceName == deviceName, known.revokedAt == nil else {
                return .failure(.clientCertInvalid, message: "ClientCert is revoked or belongs to another device")
            }
            return .success((answer, .certificateKept))
        }
        let record = DeviceCertificate(
            serial: certificate.serialHex, productId: product.id, deviceName: deviceName,
            fingerprint: certificate.fingerprint, pem: certificate.pem, notBefore: certificate.notBefore,
            notAfter: certificate.notAfter, issuedAt: now)
        return .success((answer, .certificate(record)))
    }

    /// Issues a certificate: for the CSR's key when the device sent one (its key never leaves it), else for a new key.
    private func certify(
        product: Product, deviceName: String, request: CertificateRequest, now: Date
    ) async throws -> Certification {
        if let clientCert = request.clientCert {
            return try await acceptDeviceCertificate(clientCert, product: product, deviceName: deviceName, now: now)
        }
        guard let authority = try authorities.authority(for: product), let stored = product.certificateAuthority else {
            throw CertificateAuthorityError(.notACertificateAuthority)
        }
        let commonName = product.id + deviceName
        let validity = stored.certificateValidityDays
        let certificate: IssuedCertificate
        let clientKey: String
        if let csr = request.csr {
            do {
                let publicKey = try ProductCertificateAuthority.verifyCSR(pem: csr, expectedCommonName: commonName)
                certificate = try authority.issue(
                    commonName: commonName, publicKey: publicKey, validityDays: validity, now: now)
            } catch let error {
                switch error.code {
                case .csrSubjectMismatch: return .failure(.csrSubjectMismatch)
                case .csrInvalid, .csrSignatureInvalid: return .failure(.csrInvalid)
                default: throw error
                }
            }
            clientKey = ""
        } else if product.deviceKeyType == .rsa2048 {
            (certificate, clientKey) = try await CryptoWork.run {
                try authority.issueWithNewKey(
                    commonName: commonName, validityDays: validity, keyType: .rsa2048, now: now)
            }
        } else {
            (certificate, clientKey) = try authority.issueWithNewKey(
                commonName: commonName, validityDays: validity, keyType: .p256, now: now)
        }
        let record = DeviceCertificate(
            serial: certificate.serialHex, productId: product.id, deviceName: deviceName,
            fingerprint: certificate.fingerprint, pem: certificate.pem, notBefore: certificate.notBefore,
            notAfter: certificate.notAfter, issuedAt: now)
        return .success((.certificate(clientCert: certificate.pem, clientKey: clientKey), .certificate(record)))
    }

    /// Records the outcome where its trail says: nothing more when the store wrote it with its decision, a count for a
    /// request that proved no secret, else an event row.
    private func audit(
        _ result: RegistrationResult, trail: AuditTrail, productId: String, deviceName: String, remoteAddress: String,
        endpoint: String, logger: Logger
    ) async {
        let outcome = result.outcome
        switch trail {
        case .recorded:
            logger.debug(
                "registration", metadata: ["dynreg.product.id": "\(productId)", "dynreg.outcome": "\(outcome)"])
            return
        case .tally(let known):
            refusals?.record(productId: known, endpoint: endpoint, outcome: outcome, remoteAddress: remoteAddress)
            return
        case .event:
            break
        }
        // Bounded fields: the audit log must not become a way to store arbitrary data.
        let event = RegistrationEvent(
            time: clock(), productId: AuditField.bounded(productId), deviceName: AuditField.bounded(deviceName),
            outcome: outcome, remoteAddress: remoteAddress, endpoint: endpoint)
        do {
            try await store.recordEvent(event)
        } catch {
            metrics.storeError("record_event")
            if let suppressed = storeFailures.due() {
                logger.warning(
                    "could not record a registration event",
                    metadata: ["dynreg.outcome": "\(outcome)", "dynreg.unlogged_failures": "\(suppressed)"])
            }
        }
        logger.debug(
            "registration", metadata: ["dynreg.product.id": "\(event.productId)", "dynreg.outcome": "\(outcome)"])
    }
}

/// The DER bytes of the first PEM block.
func pemBody(_ pem: String) -> Data? {
    PEM.firstDocumentDER(in: pem).map { Data($0) }
}
