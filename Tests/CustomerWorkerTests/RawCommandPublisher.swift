import AMQP
import BrokerTestSupport
import CRabbitMQ
import Foundation

/// Publishes one command through rabbitmq-c directly, with a `correlation_id` of raw bytes: what a
/// client in another language may send, and what `MessageProperties` (whose strings are UTF-8)
/// cannot express. Everything it opens is closed before it returns.
enum RawCommandPublisher {
    struct Failed: Error, CustomStringConvertible {
        let step: String
        var description: String { "raw publish failed at \(step)" }
    }

    static func publish(exchange: String, routingKey: String, body: [UInt8], apiKey: String, messageID: String,
                        correlationID: [UInt8]) throws {
        let configuration = try ConnectionConfiguration(url: TestBroker.url)
        guard let state = amqp_new_connection() else { throw Failed(step: "amqp_new_connection") }
        defer { amqp_destroy_connection(state) }
        guard let socket = amqp_tcp_socket_new(state),
              amqp_socket_open(socket, configuration.host, Int32(configuration.port)) == AMQP_STATUS_OK.rawValue
        else { throw Failed(step: "socket open") }
        RawLogin.allowSlowBroker(state)
        let login = cw_amqp_login_plain(state, configuration.vhost, 0, 131_072, 0, nil, configuration.user, configuration.password)
        guard login.reply_type == AMQP_RESPONSE_NORMAL else { throw Failed(step: "login: \(RawLogin.describe(login))") }
        defer { _ = amqp_connection_close(state, AMQP_REPLY_SUCCESS) }
        amqp_channel_open(state, 1)
        guard amqp_get_rpc_reply(state).reply_type == AMQP_RESPONSE_NORMAL else { throw Failed(step: "channel.open") }
        amqp_confirm_select(state, 1)
        guard amqp_get_rpc_reply(state).reply_type == AMQP_RESPONSE_NORMAL else { throw Failed(step: "confirm.select") }

        // Every C buffer lives until the end of this function.
        var owned: [UnsafeMutableRawBufferPointer] = []
        defer { owned.forEach { $0.deallocate() } }
        func bytes(_ value: [UInt8]) -> amqp_bytes_t {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, value.count), alignment: 1)
            owned.append(buffer)
            buffer.copyBytes(from: value)
            return amqp_bytes_t(len: value.count, bytes: buffer.baseAddress)
        }
        let entry = UnsafeMutablePointer<amqp_table_entry_t>.allocate(capacity: 1)
        defer { entry.deallocate() }
        entry.pointee = amqp_table_entry_t()
        entry.pointee.key = bytes(Array("x-api-key".utf8))
        entry.pointee.value.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
        entry.pointee.value.value.bytes = bytes(Array(apiKey.utf8))
        var properties = amqp_basic_properties_t()
        properties._flags = CW_FLAG_CONTENT_TYPE | CW_FLAG_HEADERS | CW_FLAG_DELIVERY_MODE | CW_FLAG_CORRELATION_ID | CW_FLAG_MESSAGE_ID
        properties.content_type = bytes(Array("application/json".utf8))
        properties.headers = amqp_table_t(num_entries: 1, entries: entry)
        properties.delivery_mode = 2
        properties.correlation_id = bytes(correlationID)
        properties.message_id = bytes(Array(messageID.utf8))
        let status = amqp_basic_publish(state, 1, bytes(Array(exchange.utf8)), bytes(Array(routingKey.utf8)), 0, 0, &properties,
                                        bytes(body))
        guard status == AMQP_STATUS_OK.rawValue else { throw Failed(step: "basic.publish") }
        var frame = amqp_frame_t()
        guard amqp_simple_wait_frame(state, &frame) == AMQP_STATUS_OK.rawValue, frame.frame_type == UInt8(AMQP_FRAME_METHOD),
              frame.payload.method.id == CW_BASIC_ACK
        else { throw Failed(step: "waiting for the confirm") }
        _ = amqp_channel_close(state, 1, AMQP_REPLY_SUCCESS)
    }
}

/// The login of the tests' raw rabbitmq-c connections.
enum RawLogin {
    /// rabbitmq-c gives the login handshake 12 s by default; the broker of a parallel test run
    /// (every test's topology declared and deleted beside it, on two cores) once took longer, and
    /// the test failed on its set-up rather than on what it checks. The worker's own connections
    /// wait `connection_timeout` (10 s by default) and retry; a raw publisher does not retry.
    static func allowSlowBroker(_ state: amqp_connection_state_t) {
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        _ = amqp_set_handshake_timeout(state, &timeout)
    }

    /// Why a login failed: the library's error, or the broker's close.
    static func describe(_ reply: amqp_rpc_reply_t) -> String {
        switch reply.reply_type {
        case AMQP_RESPONSE_LIBRARY_EXCEPTION: String(cString: amqp_error_string2(reply.library_error))
        case AMQP_RESPONSE_SERVER_EXCEPTION: "closed by the broker"
        default: "no reply"
        }
    }
}

