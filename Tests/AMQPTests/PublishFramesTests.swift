@testable import AMQP
import CRabbitMQ
import Foundation
import Synchronization
import Testing

/// The frames a batch is written as are the bytes rabbitmq-c's own `amqp_basic_publish` writes,
/// message for message: compared over a socket pair, no broker needed.
@Suite("AMQP: publish frames")
struct PublishFramesTests {
    static let everyProperty = MessageProperties(
        contentType: "application/json", contentEncoding: "identity",
        headers: ["attempt": 3, "nested": .table(["list": .array([.string("é"), .bool(true), .double(1.5)])]), "raw": .bytes([0, 255])],
        persistent: true, priority: 9, correlationID: "corr-1", replyTo: "amq.rabbitmq.reply-to", expiration: "60000",
        messageID: "msg-1", timestamp: 1_764_633_600, type: "CustomerCreated", userID: "guest", appID: "customer-worker")

    static let shapes: [OutgoingMessage] = [
        OutgoingMessage(exchange: "", routingKey: "a-queue", body: []),
        OutgoingMessage(exchange: "customer.events", routingKey: "customer.created.ünïcode", body: Array("{}".utf8),
                        properties: everyProperty),
        OutgoingMessage(exchange: "x", routingKey: "k", body: Array(repeating: 7, count: 1525),
                        properties: MessageProperties(persistent: false), mandatory: false),
    ]

    @Test("each shape, alone", arguments: shapes.indices)
    func oneMessageIsTheLibrarysBytes(_ index: Int) throws {
        let frameMax = try Self.libraryFrameMax()
        let frames = PublishFrames(capacity: 16)  // grows as it needs
        try frames.append(Self.shapes[index], channel: 1, frameMax: frameMax)
        #expect(Array(frames.bytes) == (try Self.libraryBytes([Self.shapes[index]], channel: 1)))
    }

    @Test("bodies at and around a frame's size, and over several frames")
    func bodiesSplitAsTheLibrarySplitsThem() throws {
        let frameMax = try Self.libraryFrameMax()
        let sizes = [frameMax - 9, frameMax - 8, frameMax - 7, 2 * (frameMax - 8), 3 * frameMax + 5]
        let messages = sizes.map { size in
            OutgoingMessage(exchange: "e", routingKey: "r", body: (0..<size).map { UInt8(truncatingIfNeeded: $0) },
                            properties: Self.everyProperty)
        }
        let frames = PublishFrames()
        for message in messages { try frames.append(message, channel: 3, frameMax: frameMax) }
        #expect(Array(frames.bytes) == (try Self.libraryBytes(messages, channel: 3)))
    }

    @Test("a message that cannot be encoded adds nothing; the others stay whole")
    func anUnencodableMessageAddsNothing() throws {
        let frameMax = try Self.libraryFrameMax()
        let good = [Self.shapes[1], Self.shapes[2]]
        let frames = PublishFrames()
        try frames.append(good[0], channel: 1, frameMax: frameMax)
        var tooLong = Self.shapes[1]
        tooLong.properties.correlationID = String(repeating: "c", count: 256)
        #expect(throws: AMQPError.unencodable(operation: "basic.publish", reason: "the correlation_id property is 256 bytes long (at most 255)")) {
            try frames.append(tooLong, channel: 1, frameMax: frameMax)
        }
        var hugeHeaders = Self.shapes[1]
        hugeHeaders.properties.headers = ["big": .bytes(Array(repeating: 1, count: frameMax))]
        #expect(throws: AMQPError.self) { try frames.append(hugeHeaders, channel: 1, frameMax: frameMax) }
        var longKey = Self.shapes[1]
        longKey.routingKey = String(repeating: "k", count: 256)
        #expect(throws: AMQPError.unencodable(operation: "basic.publish", reason: "the routing key is 256 bytes long (at most 255)")) {
            try frames.append(longKey, channel: 1, frameMax: frameMax)
        }
        try frames.append(good[1], channel: 1, frameMax: frameMax)
        #expect(Array(frames.bytes) == (try Self.libraryBytes(good, channel: 1)))
        frames.removeAll()
        #expect(frames.isEmpty)
    }

    // MARK: rabbitmq-c's own encoding

    /// The frame-max of a connection rabbitmq-c has not negotiated yet (what `libraryBytes` uses).
    static func libraryFrameMax() throws -> Int {
        let state = try #require(amqp_new_connection())
        defer { amqp_destroy_connection(state) }
        return Int(amqp_get_frame_max(state))
    }

    /// What `amqp_basic_publish` writes for `messages` on `channel`, read from the other end of a
    /// socket pair by a thread of its own (the socket's buffer holds less than the largest case).
    static func libraryBytes(_ messages: [OutgoingMessage], channel: UInt16) throws -> [UInt8] {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let reader = SocketReader(descriptor: pair[1])
        defer { reader.finish() }
        var writerOwned = false
        defer { if !writerOwned { close(pair[0]) } }
        do {
            let state = try #require(amqp_new_connection())
            // The connection owns the writing end once it holds it: destroying the connection
            // closes the socket, which ends the reader's stream.
            defer { amqp_destroy_connection(state) }
            let socket = try #require(amqp_tcp_socket_new(state))
            amqp_tcp_socket_set_sockfd(socket, pair[0])
            writerOwned = true
            let arena = EncodingArena()
            for message in messages {
                defer { arena.reset() }
                var properties = message.properties.cProperties(in: arena)
                let status = message.body.withUnsafeBufferPointer { body in
                    amqp_basic_publish(state, channel, arena.bytes(message.exchange), arena.bytes(message.routingKey),
                                       message.mandatory ? 1 : 0, 0, &properties,
                                       amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
                }
                try #require(status == AMQP_STATUS_OK.rawValue, "amqp_basic_publish: \(String(cString: amqp_error_string2(status)))")
            }
        }
        return reader.finish()
    }
}

/// Reads a socket to its end on a thread of its own; `finish` waits for the end and closes it.
private final class SocketReader: Sendable {
    private let descriptor: Int32
    private let done = DispatchSemaphore(value: 0)
    private let received = Mutex<[UInt8]>([])
    private let finished = Mutex(false)

    init(descriptor: Int32) {
        self.descriptor = descriptor
        let thread = Thread { [self] in
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                received.withLock { $0 += chunk[..<count] }
            }
            done.signal()
        }
        thread.start()
    }

    /// Waits for the writer to close its end (on every path: a failed test closes it too), then
    /// closes this one. Calling it again returns the same bytes.
    @discardableResult
    func finish() -> [UInt8] {
        let first = finished.withLock { was in
            defer { was = true }
            return !was
        }
        if first {
            done.wait()
            close(descriptor)
        }
        return received.withLock { $0 }
    }
}
