@testable import CustomerDomain
import Foundation
import Testing

/// Parses a JSON body with the right content type.
func parse(_ json: String, contentType: String? = "application/json") -> Result<CreateCustomerCommand, CommandRejection> {
    CreateCustomerCommand.parse(body: Array(json.utf8), contentType: contentType)
}

/// The (field, code) pairs of a rejected command; empty when it was accepted.
func fieldErrors(_ json: String) -> [String] {
    guard case .failure(let rejection) = parse(json) else { return [] }
    return rejection.fields.map { "\($0.field):\($0.code.rawValue)" }
}

struct FieldCase: Sendable, CustomTestStringConvertible {
    var json: String
    var expected: [String]
    var testDescription: String { json }
}

@Suite("Command validation")
struct CommandValidationTests {
    static let long = String(repeating: "a", count: 256)
    static let longest = String(repeating: "é", count: 255)

    @Test("each rule reports its field error code", arguments: [
        FieldCase(json: #"{}"#, expected: ["externalId:required"]),
        FieldCase(json: #"{"externalId":null}"#, expected: ["externalId:required"]),
        FieldCase(json: #"{"externalId":42}"#, expected: ["externalId:invalid_type"]),
        FieldCase(json: #"{"externalId":""}"#, expected: ["externalId:empty"]),
        FieldCase(json: #"{"externalId":"\#(long)"}"#, expected: ["externalId:too_long"]),
        FieldCase(json: #"{"externalId":" a"}"#, expected: ["externalId:surrounding_whitespace"]),
        FieldCase(json: #"{"externalId":"a\u00a0"}"#, expected: ["externalId:surrounding_whitespace"]),
        FieldCase(json: #"{"externalId":"a\u3000"}"#, expected: ["externalId:surrounding_whitespace"]),
        FieldCase(json: #"{"externalId":"a\tb"}"#, expected: ["externalId:control_characters"]),
        FieldCase(json: #"{"externalId":"a\u0085b"}"#, expected: ["externalId:control_characters"]),
        FieldCase(json: #"{"externalId":"\ufeffcus-1"}"#, expected: ["externalId:surrounding_whitespace"]),
        FieldCase(json: #"{"externalId":"cus-1\ufeff"}"#, expected: ["externalId:surrounding_whitespace"]),
        FieldCase(json: #"{"externalId":"\u200bcus-1"}"#, expected: ["externalId:surrounding_whitespace"]),
        FieldCase(json: #"{"externalId":"x","name":"Ada\u0000Lovelace"}"#, expected: ["name:control_characters"]),
        FieldCase(json: #"{"externalId":"x","email":"ada\u0000@example.com"}"#, expected: ["email:control_characters"]),
        FieldCase(json: #"{"externalId":"x","billingAddress1":"1 Main St\nForged: line"}"#, expected: ["billingAddress1:control_characters"]),
        FieldCase(json: #"{"externalId":"x","shippingState":"Bavaria\u007f"}"#, expected: ["shippingState:control_characters"]),
        FieldCase(json: #"{"externalId":"x","stripeId":"cus_\u009f"}"#, expected: ["stripeId:control_characters"]),
        FieldCase(json: #"{"externalId":"x","name":""}"#, expected: ["name:empty"]),
        FieldCase(json: #"{"externalId":"x","name":true}"#, expected: ["name:invalid_type"]),
        FieldCase(json: #"{"externalId":"x","name":["a"]}"#, expected: ["name:invalid_type"]),
        FieldCase(json: #"{"externalId":"x","stripeId":{"id":"a"}}"#, expected: ["stripeId:invalid_type"]),
        FieldCase(json: #"{"externalId":"x","billingCity":"\#(long)"}"#, expected: ["billingCity:too_long"]),
        FieldCase(json: #"{"externalId":"x","billingZipCode":"1234"}"#, expected: ["billingZipCode:invalid_zip_code"]),
        FieldCase(json: #"{"externalId":"x","shippingZipCode":"12345-67"}"#, expected: ["shippingZipCode:invalid_zip_code"]),
        FieldCase(json: #"{"externalId":"x","shippingZipCode":"１２３４５"}"#, expected: ["shippingZipCode:invalid_zip_code"]),
        FieldCase(json: #"{"externalId":"x","billingCountry":"XX"}"#, expected: ["billingCountry:invalid_country"]),
        FieldCase(json: #"{"externalId":"x","billingCountry":"USA"}"#, expected: ["billingCountry:invalid_country"]),
        FieldCase(json: #"{"externalId":"x","shippingCountry":"ß"}"#, expected: ["shippingCountry:invalid_country"]),
        FieldCase(json: #"{"externalId":"x","billingCountry":"US","billingState":"ZZ"}"#, expected: ["billingState:invalid_state"]),
        FieldCase(json: #"{"externalId":"x","shippingCountry":"us","shippingState":"California"}"#, expected: ["shippingState:invalid_state"]),
        FieldCase(json: #"{"externalId":"x","email":"a.example.com"}"#, expected: ["email:invalid_email"]),
        FieldCase(json: #"{"externalId":"x","email":"a@b@c.com"}"#, expected: ["email:invalid_email"]),
        FieldCase(json: #"{"externalId":"x","email":"@c.com"}"#, expected: ["email:invalid_email"]),
        FieldCase(json: #"{"externalId":"x","email":"a@localhost"}"#, expected: ["email:invalid_email"]),
        FieldCase(json: #"{"externalId":"x","email":"a@.com"}"#, expected: ["email:invalid_email"]),
        FieldCase(json: #"{"externalId":"x","email":"a b@c.com"}"#, expected: ["email:invalid_email"]),
        FieldCase(json: #"{"externalId":"x","phone":"1"}"#, expected: ["phone:unknown_field"]),
    ])
    func rule(_ testCase: FieldCase) {
        #expect(fieldErrors(testCase.json) == testCase.expected)
    }

    @Test("valid values pass", arguments: [
        #"{"externalId":"x"}"#,
        #"{"externalId":"a b","name":" padded names are fine "}"#,
        #"{"externalId":"\#(longest)"}"#,
        #"{"externalId":"x","billingZipCode":"12345","shippingZipCode":"12345-6789"}"#,
        #"{"externalId":"x","billingCountry":"DE","billingState":"Not a USPS code"}"#,
        #"{"externalId":"x","billingState":"anything without a country"}"#,
        #"{"externalId":"x","billingCountry":"XX","billingState":"ZZ"}"#,
        #"{"externalId":"x","email":"a@b.co"}"#,
        #"{"externalId":"x","name":null,"email":null,"stripeId":null}"#,
    ])
    func valid(_ json: String) throws {
        let errors = fieldErrors(json)
        // An invalid country makes its state free text: only the country is reported.
        #expect(errors.isEmpty || errors == ["billingCountry:invalid_country"])
    }

    @Test func reportsAllFieldErrorsAtOnceInContractOrder() throws {
        let json = #"{"zeta":1,"externalId":" x","stripeId":5,"email":"nope","billingCountry":"US","billingState":"XX","alpha":2,"name":""}"#
        #expect(fieldErrors(json) == [
            "externalId:surrounding_whitespace", "name:empty", "email:invalid_email", "billingState:invalid_state",
            "stripeId:invalid_type", "alpha:unknown_field", "zeta:unknown_field",
        ])
        guard case .failure(let rejection) = parse(json) else { Issue.record("accepted"); return }
        #expect(rejection.code == .validationFailed)
        #expect(rejection.message == "The command is invalid: 7 fields failed validation.")
        #expect(rejection.validExternalId == nil)
    }

    @Test func keepsTheExternalIdWhenOnlyOtherFieldsFail() throws {
        guard case .failure(let rejection) = parse(#"{"externalId":"cus_1","email":"x"}"#) else {
            Issue.record("accepted")
            return
        }
        #expect(rejection.validExternalId == "cus_1")
        #expect(rejection.fields == [FieldError(
            field: "email", code: .invalidEmail,
            message: "email must be a plausible email address (one @ and a domain with a dot).")])
    }

    @Test func normalisesCountriesAndUSStates() throws {
        let json = #"{"externalId":"Cus-1","billingCountry":"us","billingState":"ca","shippingCountry":"de","shippingState":"bayern"}"#
        let command = try parse(json).get()
        #expect(command.externalId == "Cus-1")
        #expect(command.billingCountry == "US")
        #expect(command.billingState == "CA")
        #expect(command.shippingCountry == "DE")
        #expect(command.shippingState == "bayern")
    }

    @Test func keepsEveryField() throws {
        var json = #"{"externalId":"e""#
        for field in CustomerField.optionalFields {
            let value = switch field {
            case .email: "v@example.com"
            case .billingCountry, .shippingCountry: "FR"
            case .billingZipCode, .shippingZipCode: "75001"
            default: "v-\(field.rawValue)"
            }
            json += #","\#(field.rawValue)":"\#(value)""#
        }
        let command = try parse(json + "}").get()
        for field in CustomerField.optionalFields {
            #expect(command[field] != nil, "\(field.rawValue)")
        }
    }

    @Test func countsCodePointsNotBytesOrGraphemes() {
        // "é" as e + combining accent: two code points, one character.
        let decomposed = String(repeating: "e\u{301}", count: 128)
        #expect(fieldErrors(#"{"externalId":"x","name":"\#(decomposed)"}"#) == ["name:too_long"])
        #expect(fieldErrors(#"{"externalId":"x","name":"\#(String(repeating: "😀", count: 255))"}"#).isEmpty)
    }
}

@Suite("Command envelope: content type, size, syntax")
struct CommandEnvelopeTests {
    static let valid = #"{"externalId":"x"}"#

    func code(_ body: [UInt8], _ contentType: String?) -> ErrorCode? {
        guard case .failure(let rejection) = CreateCustomerCommand.parse(body: body, contentType: contentType) else {
            return nil
        }
        return rejection.code
    }

    @Test("content types", arguments: [
        ("application/json", nil),
        ("application/json; charset=utf-8", nil),
        ("Application/JSON;charset=\"UTF-8\"", nil),
        ("application/json; charset=latin1", ErrorCode.unsupportedContentType),
        ("text/plain", .unsupportedContentType),
        ("application/jsonx", .unsupportedContentType),
        ("", .unsupportedContentType),
    ] as [(String, ErrorCode?)])
    func contentType(_ contentType: String, _ expected: ErrorCode?) {
        #expect(code(Array(Self.valid.utf8), contentType) == expected)
    }

    @Test func missingContentTypeIsUnsupported() {
        #expect(code(Array(Self.valid.utf8), nil) == .unsupportedContentType)
    }

    @Test func sizeLimitIs64KiB() {
        let padding = { (count: Int) in
            Array((#"{"externalId":"x","name":""# + String(repeating: " ", count: count) + "\"}").utf8)
        }
        let overhead = padding(0).count
        #expect(code(padding(65536 - overhead), "application/json") == .validationFailed) // name too long, but read
        #expect(code(padding(65537 - overhead), "application/json") == .messageTooLarge)
    }

    @Test func contentTypeIsCheckedBeforeSize() {
        #expect(code(Array(repeating: 0x20, count: 70000), "text/plain") == .unsupportedContentType)
    }

    @Test("malformed bodies", arguments: [
        [UInt8](),
        Array("not json".utf8),
        Array("[1,2]".utf8),
        Array(#""x""#.utf8),
        Array(#"{"externalId":"x""#.utf8),
        Array(#"{"externalId":"x"} {}"#.utf8),
        [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D],
        [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xC0, 0x80, 0x22, 0x7D],
        [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x7D],
    ])
    func malformed(_ body: [UInt8]) {
        #expect(code(body, "application/json") == .malformedMessage)
    }

    @Test func acceptsMultibyteUTF8() throws {
        let command = try parse(#"{"externalId":"Müller & Söhne 😀"}"#).get()
        #expect(command.externalId == "Müller & Söhne 😀")
    }
}

@Suite("Idempotency key and fingerprint")
struct IdempotencyTests {
    @Test func keyMatchesTheContractVector() {
        // python3: hashlib.sha256(b"customer.create\nm_1\ncus_1042").hexdigest()
        #expect(idempotencyKey(merchantID: "m_1", externalID: "cus_1042")
            == "c9d2d9e77f928812403586cb244d47fef4aa5863b74c2b9773fb6419322c6019")
    }

    @Test func keyMatchesTheExampleReply() {
        #expect(idempotencyKey(merchantID: "8db8df93-edd5-4cd5-86b3-bc355166765c", externalID: "user/5f2c81")
            == "fff70c545e05016109548c28ad451adb89122300d3a581733fb1b35053d087e5")
    }

    @Test func fingerprintIgnoresKeyOrderAbsentVersusNullAndCase() throws {
        let a = try parse(#"{"externalId":"x","name":"A","billingCountry":"us"}"#).get()
        let b = try parse(#"{"billingCountry":"US","name":"A","externalId":"x","email":null}"#).get()
        #expect(a.fingerprint == b.fingerprint)
        #expect(a.fingerprint.count == 64)
    }

    /// Stored records keep the fingerprint they were written with: its encoding must never change.
    @Test func fingerprintMatchesItsEncodingVector() throws {
        // python3: per field in contract order, b"\x00" for null, else b"\x01" + 4-byte big-endian
        // UTF-8 length + the bytes; hashlib.sha256(...).hexdigest()
        var command = CreateCustomerCommand(externalId: "cus_1")
        command.name = "Ada Lovelace"
        command.billingCountry = "US"
        command.billingState = "CA"
        command.stripeId = "cus_é"
        #expect(command.fingerprint == "fea115c5188b9450a169bb17d7f0f9f168757da4c7249e9a6fb5da14f072fc82")
    }

    @Test func fingerprintSeesEveryDifference() throws {
        let base = try parse(#"{"externalId":"x","name":"ab"}"#).get()
        var moved = base
        moved.name = "a"
        moved.email = "b"
        var renamed = base
        renamed.name = "ac"
        var externalChanged = base
        externalChanged.externalId = "y"
        let prints = [base, moved, renamed, externalChanged].map(\.fingerprint)
        #expect(Set(prints).count == 4)
    }

    /// A redelivered command must get the message id its first reply had, whichever version of
    /// the worker answers it: the derivations are pinned to vectors.
    @Test func replyMessageIDsMatchTheirVectors() {
        // python3: k = hashlib.sha256(b"customer.create\nm\ne").hexdigest()
        //   hashlib.sha256((k + "\nCustomerCreated").encode()).hexdigest()[:32]
        //   hashlib.sha256(f"CustomerCreateFailed\nvalidation_failed\n{k}\n".encode() + bytes([1])).hexdigest()[:32]
        let key = idempotencyKey(merchantID: "m", externalID: "e")
        #expect(key == "a273e2cad1a6bd455733a2c880a6c740b439be9ae315c366d278ea6eb4070e99")
        #expect(ReplyMessageID.created(idempotencyKey: key) == "7887836f3812441b9778c0a492577b6a")
        #expect(ReplyMessageID.failed(code: .validationFailed, idempotencyKey: key, body: [1]) == "c89ebb4c75077d25b98498bde5e28f79")
        #expect(ReplyMessageID.failed(code: .validationFailed, idempotencyKey: nil, body: [1]) == "7085f9c497f3f304cc6199f7bef71cb7")
    }

    @Test func replyMessageIDsAreDeterministicAndDistinct() {
        let key = idempotencyKey(merchantID: "m", externalID: "e")
        #expect(ReplyMessageID.created(idempotencyKey: key) == ReplyMessageID.created(idempotencyKey: key))
        #expect(ReplyMessageID.created(idempotencyKey: key).count == 32)
        let failed = ReplyMessageID.failed(code: .validationFailed, idempotencyKey: key, body: [1])
        #expect(failed == ReplyMessageID.failed(code: .validationFailed, idempotencyKey: key, body: [1]))
        #expect(failed != ReplyMessageID.failed(code: .validationFailed, idempotencyKey: key, body: [2]))
        #expect(failed != ReplyMessageID.failed(code: .externalIdConflict, idempotencyKey: key, body: [1]))
        #expect(failed != ReplyMessageID.created(idempotencyKey: key))
    }
}

@Suite("Code lists")
struct GeographyTests {
    @Test func listSizes() {
        #expect(Geography.countryCodes.count == 249)
        #expect(Geography.usStateCodes.count == 63)
    }

    @Test func membership() {
        for code in ["US", "DE", "AX", "SS", "BQ", "CW", "SX", "XK"].dropLast() {
            #expect(Geography.countryCodes.contains(code), "\(code)")
        }
        for code in ["XK", "UK", "EU", "us", "U", "USA", ""] {
            #expect(!Geography.countryCodes.contains(code), "\(code)")
        }
        for code in ["CA", "DC", "PR", "GU", "VI", "AS", "MP", "UM", "AA", "AE", "AP", "FM", "MH", "PW"] {
            #expect(Geography.usStateCodes.contains(code), "\(code)")
        }
        #expect(!Geography.usStateCodes.contains("ZZ"))
    }
}
