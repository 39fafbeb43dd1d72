import PostgresNIO
import CustomerDomain

/// A one-dimensional PostgreSQL array whose elements may be NULL, in the binary format (postgres-nio
/// 1.33 encodes arrays of non-optional elements only). A batch's rows go to the server as one
/// such array per column, unnested by one statement whose text never changes (see
/// `PostgresTransaction.write`).
struct NullableArray<Element: PostgresArrayEncodable & PostgresNonThrowingEncodable>: PostgresNonThrowingEncodable {
    var elements: [Element?]

    init(_ elements: [Element?]) { self.elements = elements }

    static var psqlType: PostgresDataType { Element.psqlArrayType }
    static var psqlFormat: PostgresFormat { .binary }

    func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        // The layout `array_recv` reads: dimensions, has-nulls flag, element type; then per
        // dimension its length and lower bound; then each element as a length (-1: NULL) and bytes.
        buffer.writeInteger(elements.isEmpty ? 0 : 1, as: Int32.self)
        buffer.writeInteger(elements.contains { $0 == nil } ? 1 : 0, as: Int32.self)
        buffer.writeInteger(Element.psqlType.rawValue)
        guard !elements.isEmpty else { return }
        buffer.writeInteger(Int32(elements.count), as: Int32.self)
        buffer.writeInteger(1, as: Int32.self)
        for element in elements {
            guard let element else {
                buffer.writeInteger(-1, as: Int32.self)
                continue
            }
            let lengthIndex = buffer.writerIndex
            buffer.writeInteger(0, as: Int32.self)
            let start = buffer.writerIndex
            element.encode(into: &buffer, context: context)
            buffer.setInteger(Int32(buffer.writerIndex - start), at: lengthIndex, as: Int32.self)
        }
    }
}

/// One field of each command, as a `text[]` parameter (NULL where a command has no value),
/// encoded straight from the commands' bytes (`CreateCustomerCommand.withUTF8`): no `String` per
/// value. The layout is `NullableArray`'s.
struct CommandFieldColumn: PostgresNonThrowingEncodable {
    var commands: [CreateCustomerCommand]
    var field: CustomerField

    static var psqlType: PostgresDataType { .textArray }
    static var psqlFormat: PostgresFormat { .binary }

    func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        buffer.writeInteger(commands.isEmpty ? 0 : 1, as: Int32.self)
        let hasNulls = commands.contains { $0.withUTF8(field) { $0 == nil } }
        buffer.writeInteger(hasNulls ? 1 : 0, as: Int32.self)
        buffer.writeInteger(PostgresDataType.text.rawValue)
        guard !commands.isEmpty else { return }
        buffer.writeInteger(Int32(commands.count), as: Int32.self)
        buffer.writeInteger(1, as: Int32.self)
        for command in commands {
            command.withUTF8(field) { (value: UnsafeBufferPointer<UInt8>?) -> Void in
                guard let value else {
                    buffer.writeInteger(-1, as: Int32.self)
                    return
                }
                buffer.writeInteger(Int32(value.count), as: Int32.self)
                buffer.writeBytes(UnsafeRawBufferPointer(value))
            }
        }
    }
}
