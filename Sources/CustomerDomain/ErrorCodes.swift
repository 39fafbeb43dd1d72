/// The `error.code` of a `CustomerCreateFailed` reply.
public enum ErrorCode: String, Codable, Sendable, CaseIterable {
    case malformedMessage = "malformed_message"
    case unsupportedContentType = "unsupported_content_type"
    case messageTooLarge = "message_too_large"
    case unauthorized
    case forbidden
    case validationFailed = "validation_failed"
    case externalIdConflict = "external_id_conflict"
}

/// The `code` of one entry of `error.fields`.
public enum FieldErrorCode: String, Codable, Sendable, CaseIterable {
    case required
    case invalidType = "invalid_type"
    case empty
    case tooLong = "too_long"
    case surroundingWhitespace = "surrounding_whitespace"
    case controlCharacters = "control_characters"
    case invalidZipCode = "invalid_zip_code"
    case invalidCountry = "invalid_country"
    case invalidState = "invalid_state"
    case invalidEmail = "invalid_email"
    case unknownField = "unknown_field"
}

/// One failing field of a command.
public struct FieldError: Codable, Sendable, Hashable, OrderedJSONObject {
    public var field: String
    public var code: FieldErrorCode
    public var message: String

    public init(field: String, code: FieldErrorCode, message: String) {
        self.field = field
        self.code = code
        self.message = message
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("field", field)
        try writer.write("code", code)
        try writer.write("message", message)
    }
}

/// Why a command was turned down: what the `error` object of a `CustomerCreateFailed` reply says.
public struct CommandRejection: Error, Sendable, Hashable {
    public var code: ErrorCode
    public var message: String
    /// Every failing field; non-empty only for `validation_failed`.
    public var fields: [FieldError]
    /// The command's `externalId` when it is itself valid, so the reply can carry an idempotency key.
    public var validExternalId: String?

    public init(code: ErrorCode, message: String, fields: [FieldError] = [], validExternalId: String? = nil) {
        self.code = code
        self.message = message
        self.fields = fields
        self.validExternalId = validExternalId
    }
}

extension CommandRejection {
    public static let missingAPIKey = CommandRejection(
        code: .unauthorized, message: "The x-api-key header is missing.")
    public static let invalidAPIKey = CommandRejection(
        code: .unauthorized, message: "The API key is unknown or revoked.")
    public static let headersTooDeep = CommandRejection(
        code: .malformedMessage, message: "The message headers nest tables or arrays more than 64 levels deep.")
    public static let publishableAPIKey = CommandRejection(
        code: .forbidden, message: "API key must be of type secret")

    public static func externalIdConflict(_ externalId: String) -> CommandRejection {
        CommandRejection(
            code: .externalIdConflict,
            message: "A customer with externalId \"\(externalId)\" already exists with different details.",
            validExternalId: externalId)
    }
}
