import AMQP
import BrokerTestSupport
import CRabbitMQ
import Foundation

/// Publishes one command whose headers nest tables or arrays `depth` levels deep within one frame
/// (an empty key costs 6 bytes a level, an array 5: 20,000 levels fit in RabbitMQ's 128 KiB frames).
/// The value is built in C memory, level by level, and sent by rabbitmq-c directly (the project's
/// own encoder refuses nothing, but `FieldValue` would be a 20,000-deep Swift value), on a thread
/// of its own with a large stack because rabbitmq-c's encoder recurses once per level. The
/// connection is closed on every path; the channel's close-ok proves the broker took the publish.
enum DeepHeaders {
    enum Kind: Sendable { case tables, arrays }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func publish(_ kind: Kind, depth: Int, exchange: String, routingKey: String, body: String,
                        messageID: String, apiKey: String) async throws {
        let configuration = try TestBroker.configuration(name: "deep-headers")
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread {
                do {
                    try send(kind, depth: depth, configuration: configuration, exchange: exchange, routingKey: routingKey,
                             body: body, messageID: messageID, apiKey: apiKey)
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            thread.stackSize = 256 << 20
            thread.start()
        }
    }

    private static func send(_ kind: Kind, depth: Int, configuration: ConnectionConfiguration, exchange: String, routingKey: String,
                             body: String, messageID: String, apiKey: String) throws {
        guard let connection = amqp_new_connection() else { throw Failure(description: "amqp_new_connection failed") }
        defer { amqp_destroy_connection(connection) }
        guard let socket = amqp_tcp_socket_new(connection),
              amqp_socket_open(socket, configuration.host, Int32(configuration.port)) == AMQP_STATUS_OK.rawValue else {
            throw Failure(description: "cannot connect to \(configuration.endpoint)")
        }
        var noProperties = amqp_table_t(num_entries: 0, entries: nil)
        RawLogin.allowSlowBroker(connection)
        let login = cw_amqp_login_plain(connection, configuration.vhost, 0, 131_072, 0, &noProperties,
                                        configuration.user, configuration.password)
        guard login.reply_type == AMQP_RESPONSE_NORMAL else { throw Failure(description: "login: \(RawLogin.describe(login))") }
        defer { _ = amqp_connection_close(connection, AMQP_REPLY_SUCCESS) }
        _ = amqp_channel_open(connection, 1)
        guard amqp_get_rpc_reply(connection).reply_type == AMQP_RESPONSE_NORMAL else { throw Failure(description: "channel.open failed") }
        // Confirms: the publish returns once the broker has stored the message. Parsing and storing
        // 20,000 levels takes the broker seconds of CPU, which a test must not count against the
        // worker's reply.
        _ = amqp_confirm_select(connection, 1)
        guard amqp_get_rpc_reply(connection).reply_type == AMQP_RESPONSE_NORMAL else { throw Failure(description: "confirm.select failed") }

        // C strings that must outlive the calls they are passed to.
        var owned: [UnsafeMutablePointer<CChar>] = []
        defer { owned.forEach { free($0) } }
        func bytes(_ text: String) -> amqp_bytes_t {
            let copy = strdup(text)!
            owned.append(copy)
            return amqp_cstring_bytes(copy)
        }
        let headers = NestedHeaders(kind, depth: depth, apiKey: apiKey)

        var properties = amqp_basic_properties_t()
        properties._flags = CW_FLAG_HEADERS | CW_FLAG_CONTENT_TYPE | CW_FLAG_MESSAGE_ID | CW_FLAG_CORRELATION_ID | CW_FLAG_DELIVERY_MODE
        properties.headers = headers.table
        properties.content_type = bytes("application/json")
        properties.message_id = bytes(messageID)
        properties.correlation_id = bytes(messageID)
        properties.delivery_mode = 2
        let status = withExtendedLifetime(headers) {
            amqp_basic_publish(connection, 1, bytes(exchange), bytes(routingKey), 0, 0, &properties, bytes(body))
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            throw Failure(description: "amqp_basic_publish: \(String(cString: amqp_error_string2(status)))")
        }
        var frame = amqp_frame_t()
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        let waited = amqp_simple_wait_frame_noblock(connection, &frame, &timeout)
        guard waited == AMQP_STATUS_OK.rawValue else {
            throw Failure(description: "no confirm within 120 s: \(String(cString: amqp_error_string2(waited)))")
        }
        guard frame.frame_type == AMQP_FRAME_METHOD, frame.payload.method.id == AMQP_BASIC_ACK_METHOD else {
            throw Failure(description: "the broker did not confirm the message (frame \(frame.frame_type), method \(frame.payload.method.id))")
        }
        let closed = amqp_channel_close(connection, 1, AMQP_REPLY_SUCCESS)
        guard closed.reply_type == AMQP_RESPONSE_NORMAL else { throw Failure(description: "the broker did not take the message (channel.close failed)") }
    }
}

/// A headers table whose entry `deep` nests tables or arrays until the whole is `depth` levels
/// deep (the headers table is level 1), beside an `x-api-key`. Built in C memory level by level,
/// no recursion; freed when this object goes.
final class NestedHeaders {
    private let strings: [UnsafeMutablePointer<CChar>]
    private let leaf = UnsafeMutablePointer<amqp_field_value_t>.allocate(capacity: 1)
    private let emptyKey = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
    private let tableEntries: UnsafeMutablePointer<amqp_table_entry_t>
    private let arrayElements: UnsafeMutablePointer<amqp_field_value_t>
    private let root = UnsafeMutablePointer<amqp_table_entry_t>.allocate(capacity: 2)

    var table: amqp_table_t { amqp_table_t(num_entries: 2, entries: root) }

    init(_ kind: DeepHeaders.Kind, depth: Int, apiKey: String) {
        precondition(depth >= 2)
        strings = [strdup("x-api-key")!, strdup("deep")!, strdup(apiKey)!]
        tableEntries = .allocate(capacity: depth)
        arrayElements = .allocate(capacity: depth)
        // An empty key costs one byte a level: 20,000 levels of tables fit in one frame.
        let key = amqp_bytes_t(len: 0, bytes: UnsafeMutableRawPointer(emptyKey))
        leaf.pointee = amqp_field_value_t()
        leaf.pointee.kind = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
        leaf.pointee.value.boolean = 1
        // Levels 2 … depth: element i holds element i + 1; the last one is empty (or holds a boolean).
        for level in 0..<(depth - 1) {
            var value = amqp_field_value_t()
            let last = level == depth - 2
            switch kind {
            case .tables:
                value.kind = UInt8(AMQP_FIELD_KIND_TABLE.rawValue)
                value.value.table = last ? amqp_table_t(num_entries: 0, entries: nil) : amqp_table_t(num_entries: 1, entries: tableEntries + level + 1)
                tableEntries[level] = amqp_table_entry_t(key: key, value: value)
            case .arrays:
                value.kind = UInt8(AMQP_FIELD_KIND_ARRAY.rawValue)
                value.value.array = amqp_array_t(num_entries: 1, entries: last ? leaf : arrayElements + level + 1)
                arrayElements[level] = value
            }
        }
        var apiKeyValue = amqp_field_value_t()
        apiKeyValue.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
        apiKeyValue.value.bytes = amqp_cstring_bytes(strings[2])
        root[0] = amqp_table_entry_t(key: amqp_cstring_bytes(strings[0]), value: apiKeyValue)
        root[1] = amqp_table_entry_t(key: amqp_cstring_bytes(strings[1]), value: kind == .tables ? tableEntries[0].value : arrayElements[0])
    }

    deinit {
        strings.forEach { free($0) }
        leaf.deallocate()
        emptyKey.deallocate()
        tableEntries.deallocate()
        arrayElements.deallocate()
        root.deallocate()
    }
}
