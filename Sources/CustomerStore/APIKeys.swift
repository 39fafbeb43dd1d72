import Crypto
import CustomerDomain
import Foundation
import GRDB

public enum APIKeyType: String, Sendable, CaseIterable {
    case secret, publishable

    /// What every key of this type starts with.
    public var prefix: String { self == .secret ? "sk_" : "pk_" }
}

/// The outcome of checking an `x-api-key` header.
public enum Authentication: Sendable, Equatable {
    case merchant(id: String)
    case unauthorized(UnauthorizedReason)
    /// A valid key that may not create customers: a publishable one.
    case forbidden
}

public enum UnauthorizedReason: Sendable, Equatable {
    case missing, unknown, revoked

    /// Unknown and revoked keys get the same reply, so a reply does not tell which keys once existed.
    var rejection: CommandRejection {
        self == .missing ? .missingAPIKey : .invalidAPIKey
    }
}

/// What `merchants create` hands out; the secret parts are shown only once.
public struct MerchantCredentials: Sendable, Hashable, OrderedJSONObject {
    public var merchantId: String
    public var secretKey: String
    public var publishableKey: String

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("merchantId", merchantId)
        try writer.write("secretKey", secretKey)
        try writer.write("publishableKey", publishableKey)
    }
}

/// API keys look like `sk_<key id>_<secret>`: the key id (16 hex digits) finds the row without being
/// secret; the secret (256 random bits, 64 hex digits) is what makes the key unguessable. Only the
/// SHA-256 of the whole key is stored.
enum APIKeys {
    static let keyIDLength = 16

    static func generate(_ type: APIKeyType) -> (keyID: String, key: String) {
        let keyID = randomHex(bytes: keyIDLength / 2)
        return (keyID, type.prefix + keyID + "_" + randomHex(bytes: 32))
    }

    static func hash(_ key: String) -> SHA256.Digest {
        SHA256.hash(data: Array(key.utf8))
    }

    /// The key id inside a whole key, a `sk_<id>`/`pk_<id>` prefix or a bare id, and the type its
    /// prefix names, if any.
    static func keyID(from reference: String) -> (id: String, type: APIKeyType?)? {
        var rest = Substring(reference)
        var type: APIKeyType?
        for candidate in APIKeyType.allCases where rest.hasPrefix(candidate.prefix) {
            type = candidate
            rest = rest.dropFirst(candidate.prefix.count)
        }
        let id = rest.prefix { $0 != "_" }
        guard id.count == keyIDLength, id.allSatisfy(\.isHexDigit) else { return nil }
        return (String(id), type)
    }

    static func authenticate(_ apiKey: String, db: Database) throws -> Authentication {
        guard let (keyID, _) = keyID(from: apiKey) else { return .unauthorized(.unknown) }
        let statement = try db.cachedStatement(sql: "SELECT merchant_id, type, key_hash, revoked_at FROM api_keys WHERE id = ?")
        guard let row = try Row.fetchOne(statement, arguments: [keyID]) else { return .unauthorized(.unknown) }
        let storedHash: Data = row["key_hash"]
        // Digest == compares in constant time.
        guard hash(apiKey) == storedHash else { return .unauthorized(.unknown) }
        if (row["revoked_at"] as Int64?) != nil { return .unauthorized(.revoked) }
        let type: String = row["type"]
        guard type == APIKeyType.secret.rawValue else { return .forbidden }
        return .merchant(id: row["merchant_id"])
    }

    /// Stores a new key for an existing merchant and returns it.
    static func create(merchantID: String, type: APIKeyType, now: Timestamp, db: Database) throws -> String {
        let (keyID, key) = generate(type)
        try db.execute(
            sql: "INSERT INTO api_keys (id, merchant_id, type, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            arguments: [keyID, merchantID, type.rawValue, Data(hash(key)), now.millisecondsSince1970])
        return key
    }

    private static func randomHex(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }.hexString
    }
}

// MARK: - Admin operations

extension CustomerStore {
    /// Creates a merchant with one secret and one publishable key.
    public func createMerchant(name: String, now: Date = Date()) async throws -> MerchantCredentials {
        let name = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty else { throw CustomerStoreError.invalidArgument("the merchant name must not be empty") }
        let timestamp = Timestamp(now)
        return try await write("create merchant") { db in
            let merchantID = newIdentifier()
            try db.execute(
                sql: "INSERT INTO merchants (id, name, created_at) VALUES (?, ?, ?)",
                arguments: [merchantID, name, timestamp.millisecondsSince1970])
            return MerchantCredentials(
                merchantId: merchantID,
                secretKey: try APIKeys.create(merchantID: merchantID, type: .secret, now: timestamp, db: db),
                publishableKey: try APIKeys.create(merchantID: merchantID, type: .publishable, now: timestamp, db: db))
        }
    }

    /// Creates another key for a merchant; throws `merchantNotFound`.
    public func createAPIKey(merchantID: String, type: APIKeyType, now: Date = Date()) async throws -> String {
        let timestamp = Timestamp(now)
        return try await write("create API key") { db in
            try Self.requireMerchant(merchantID, db: db)
            return try APIKeys.create(merchantID: merchantID, type: type, now: timestamp, db: db)
        }
    }

    /// Revokes the key named by its id, its `sk_<id>`/`pk_<id>` prefix or the whole key, and returns
    /// the key id. Revoking a revoked key keeps the first revocation time. Throws `apiKeyNotFound`.
    @discardableResult
    public func revokeAPIKey(_ reference: String, now: Date = Date()) async throws -> String {
        guard let (keyID, type) = APIKeys.keyID(from: reference) else { throw CustomerStoreError.apiKeyNotFound(reference) }
        let timestamp = Timestamp(now)
        return try await write("revoke API key") { db in
            try db.execute(
                sql: "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND type = COALESCE(?, type)",
                arguments: [timestamp.millisecondsSince1970, keyID, type?.rawValue])
            guard db.changesCount == 1 else { throw CustomerStoreError.apiKeyNotFound(reference) }
            return keyID
        }
    }

    public func authenticate(apiKey: String?) async throws -> Authentication {
        guard let apiKey, !apiKey.isEmpty else { return .unauthorized(.missing) }
        return try await read("authenticate") { db in try APIKeys.authenticate(apiKey, db: db) }
    }

    static func requireMerchant(_ merchantID: String, db: Database) throws {
        guard try Bool.fetchOne(db, sql: "SELECT 1 FROM merchants WHERE id = ?", arguments: [merchantID]) != nil else {
            throw CustomerStoreError.merchantNotFound(merchantID)
        }
    }
}
