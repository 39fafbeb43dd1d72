import CRabbitMQ

/// Publishes encoded into one buffer, frame for frame as rabbitmq-c 0.11's `amqp_basic_publish`
/// writes them (a `basic.publish` method frame, a content header, body frames of at most
/// frame-max − 8 bytes), so that a batch of replies leaves in one write instead of three system
/// calls per message. Owned by one connection, like its arena; not thread-safe.
final class PublishFrames {
    private var buffer: UnsafeMutableRawBufferPointer
    /// Bytes of whole frames waiting to be written.
    private(set) var count = 0
    private let arena = EncodingArena()

    /// A frame's type, channel and payload size, and its end marker (amqp_private.h).
    private static let frameHeaderBytes = 7
    private static let frameOverheadBytes = 8
    private static let frameEnd: UInt8 = 0xCE
    /// A `basic.publish` method frame's payload at its largest: method id, ticket, two short
    /// strings of at most 255 bytes, the flags.
    private static let largestMethodPayload = 4 + 2 + 256 + 256 + 1

    init(capacity: Int = 64 * 1024) {
        buffer = .allocate(byteCount: capacity, alignment: 8)
    }

    deinit { buffer.deallocate() }

    var isEmpty: Bool { count == 0 }

    /// The frames appended since the last `removeAll`.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: buffer[..<count]) }

    func removeAll() { count = 0 }

    /// Appends one publish on `channel`. A message that cannot be carried (a short string over
    /// 255 bytes, properties larger than a frame) throws `.unencodable` and appends nothing, so
    /// the frames before it stay whole and the connection usable.
    func append(_ message: OutgoingMessage, channel: UInt16, frameMax: Int) throws(AMQPError) {
        defer { arena.reset() }
        try Self.checkShortString(message.exchange, "exchange")
        try Self.checkShortString(message.routingKey, "routing key")
        let start = count
        let bodyPerFrame = frameMax - Self.frameOverheadBytes
        let bodyFrames = (message.body.count + bodyPerFrame - 1) / bodyPerFrame
        reserve(count + Self.frameOverheadBytes + Self.largestMethodPayload + frameMax
                + message.body.count + bodyFrames * Self.frameOverheadBytes)

        var publish = amqp_basic_publish_t(ticket: 0, exchange: arena.bytes(message.exchange),
                                           routing_key: arena.bytes(message.routingKey),
                                           mandatory: message.mandatory ? 1 : 0, immediate: 0)
        let method = beginFrame(type: UInt8(AMQP_FRAME_METHOD), channel: channel)
        store(UInt32(CW_BASIC_PUBLISH))
        let methodBytes = amqp_encode_method(CW_BASIC_PUBLISH, &publish, freeSpace(Self.largestMethodPayload))
        guard methodBytes >= 0 else {
            count = start
            throw .unencodable(operation: "basic.publish", reason: "the method: \(String(cString: amqp_error_string2(methodBytes)))")
        }
        count += Int(methodBytes)
        endFrame(method)

        var properties = message.properties.cProperties(in: arena)
        let header = beginFrame(type: UInt8(AMQP_FRAME_HEADER), channel: channel)
        store(UInt16(AMQP_BASIC_CLASS))
        store(UInt16(0))  // weight
        store(UInt64(message.body.count))
        // The header frame may not exceed frame-max: its 12 bytes above, then the properties.
        let propertyBytes = amqp_encode_properties(UInt16(AMQP_BASIC_CLASS), &properties,
                                                   freeSpace(frameMax - Self.frameOverheadBytes - 12))
        guard propertyBytes >= 0 else {
            count = start
            throw .unencodable(operation: "basic.publish", reason: Self.propertyProblem(properties, status: propertyBytes))
        }
        count += Int(propertyBytes)
        endFrame(header)

        message.body.withUnsafeBytes { body in
            var offset = 0
            while offset < body.count {
                let length = min(bodyPerFrame, body.count - offset)
                let frame = beginFrame(type: UInt8(AMQP_FRAME_BODY), channel: channel)
                UnsafeMutableRawBufferPointer(rebasing: buffer[count..<(count + length)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: body[offset..<(offset + length)]))
                count += length
                offset += length
                endFrame(frame)
            }
        }
    }

    private static func checkShortString(_ value: String, _ name: String) throws(AMQPError) {
        let length = value.utf8.count
        guard length > MessageProperties.maximumShortStringBytes else { return }
        throw .unencodable(operation: "basic.publish", reason: "the \(name) is \(length) bytes long (at most 255)")
    }

    /// Grows the buffer, keeping what it holds, to at least `capacity` bytes.
    private func reserve(_ capacity: Int) {
        guard capacity > buffer.count else { return }
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 2 * buffer.count), alignment: 8)
        grown.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        buffer.deallocate()
        buffer = grown
    }

    /// Writes a frame's type and channel, leaves its size to `endFrame`; returns where it starts.
    private func beginFrame(type: UInt8, channel: UInt16) -> Int {
        let start = count
        buffer[count] = type
        count += 1
        store(channel)
        count += 4  // the payload size, known at the end
        return start
    }

    private func endFrame(_ start: Int) {
        let payload = count - start - Self.frameHeaderBytes
        buffer.storeBytes(of: UInt32(payload).bigEndian, toByteOffset: start + 3, as: UInt32.self)
        buffer[count] = Self.frameEnd
        count += 1
    }

    private func store<T: FixedWidthInteger>(_ value: T) {
        buffer.storeBytes(of: value.bigEndian, toByteOffset: count, as: T.self)
        count += MemoryLayout<T>.size
    }

    /// Up to `limit` bytes after what is written, for rabbitmq-c to encode into.
    private func freeSpace(_ limit: Int) -> amqp_bytes_t {
        amqp_bytes_t(len: min(limit, buffer.count - count - 1), bytes: buffer.baseAddress! + count)
    }

    /// Which property cannot be carried: the first short string over 255 bytes, else the library's words.
    private static func propertyProblem(_ properties: amqp_basic_properties_t, status: Int32) -> String {
        let strings: [(String, amqp_flags_t, amqp_bytes_t)] = [
            ("content_type", CW_FLAG_CONTENT_TYPE, properties.content_type),
            ("content_encoding", CW_FLAG_CONTENT_ENCODING, properties.content_encoding),
            ("correlation_id", CW_FLAG_CORRELATION_ID, properties.correlation_id),
            ("reply_to", CW_FLAG_REPLY_TO, properties.reply_to),
            ("expiration", CW_FLAG_EXPIRATION, properties.expiration),
            ("message_id", CW_FLAG_MESSAGE_ID, properties.message_id),
            ("type", CW_FLAG_TYPE, properties.type),
            ("user_id", CW_FLAG_USER_ID, properties.user_id),
            ("app_id", CW_FLAG_APP_ID, properties.app_id),
        ]
        for (name, flag, bytes) in strings where properties._flags & flag != 0 && bytes.len > MessageProperties.maximumShortStringBytes {
            return "the \(name) property is \(bytes.len) bytes long (at most 255)"
        }
        return "the properties: \(String(cString: amqp_error_string2(status)))"
    }
}
