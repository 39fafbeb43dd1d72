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
        // After the header (`writeArrayHeader`), each element as a length (-1: NULL) and bytes.
        writeArrayHeader(count: elements.count, hasNulls: elements.contains { $0 == nil }, elementType: Element.psqlType, into: &buffer)
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
        let hasNulls = commands.contains { $0.withUTF8(field) { $0 == nil } }
        writeArrayHeader(count: commands.count, hasNulls: hasNulls, elementType: .text, into: &buffer)
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

/// The header `array_recv` reads before a one-dimensional array's elements: dimensions (none when
/// empty), has-nulls flag, element type; then the one dimension's length and lower bound.
private func writeArrayHeader(count: Int, hasNulls: Bool, elementType: PostgresDataType, into buffer: inout ByteBuffer) {
    buffer.writeInteger(count == 0 ? 0 : 1, as: Int32.self)
    buffer.writeInteger(hasNulls ? 1 : 0, as: Int32.self)
    buffer.writeInteger(elementType.rawValue)
    guard count > 0 else { return }
    buffer.writeInteger(Int32(count), as: Int32.self)
    buffer.writeInteger(1, as: Int32.self)
}
