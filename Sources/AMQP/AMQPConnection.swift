import CRabbitMQ
import Foundation

/// Something the broker sent on its own initiative, read by `AMQPConnection.nextEvent`.
enum InboundEvent {
    case delivery(deliveryTag: UInt64, consumerTag: String, redelivered: Bool, exchange: String, routingKey: String,
                  body: [UInt8], properties: MessageProperties)
    case ack(deliveryTag: UInt64, multiple: Bool)
    case nack(deliveryTag: UInt64, multiple: Bool)
    case returned(replyCode: UInt16, replyText: String, exchange: String, routingKey: String, properties: MessageProperties)
    case consumerCancelled(consumerTag: String)
    case blocked(reason: String)
    case unblocked
}

/// What one non-blocking read found.
enum ReadResult {
    /// Nothing buffered and nothing on the socket.
    case nothing
    /// A frame that needs no handling (a header or body outside a message, an unknown method).
    case skipped
    case event(InboundEvent)
}

/// One rabbitmq-c connection with one channel. Not thread-safe and deliberately not `Sendable`:
/// it is only ever owned by one session's event loop, so every call (all of them C calls that
/// may block) happens on that loop's thread.
final class AMQPConnection {
    private let state: amqp_connection_state_t
    private let arena = EncodingArena()
    private let channel: amqp_channel_t = 1
    let configuration: ConnectionConfiguration
    /// False once the socket failed or the broker closed the connection or our channel.
    private(set) var isUsable = false
    /// When we last wrote a frame: the loop sends a heartbeat when it has been quiet too long.
    private(set) var lastWrite = ContinuousClock.now
    /// Publishes encoded and not yet written (`flush`).
    private let outbound = PublishFrames()
    /// The last delivery's consumer tag, exchange and routing key: deliveries come in runs from
    /// one queue, and a name of 16 bytes or more (consumer tags are) cost an allocation each time.
    private var consumerTags = RecentString()
    private var exchanges = RecentString()
    private var routingKeys = RecentString()
    /// The properties a sender sets alike on every message (a content type, an app id).
    private var propertyStrings = RecentPropertyStrings()

    init(configuration: ConnectionConfiguration) throws(AMQPError) {
        guard let state = amqp_new_connection() else {
            throw .connectionFailed(endpoint: configuration.endpoint, reason: "cannot allocate a connection")
        }
        self.state = state
        self.configuration = configuration
        try open()
    }

    deinit {
        amqp_destroy_connection(state)
    }

    // MARK: Opening

    private func open() throws(AMQPError) {
        let socket = try makeSocket()
        var connectTimeout = timeval(configuration.connectTimeout)
        let status = amqp_socket_open_noblock(socket, configuration.host, Int32(configuration.port), &connectTimeout)
        guard status == AMQP_STATUS_OK.rawValue else { throw openError(status) }

        var rpcTimeout = timeval(configuration.rpcTimeout)
        amqp_set_rpc_timeout(state, &rpcTimeout)
        amqp_set_handshake_timeout(state, &rpcTimeout)
        try login()
        amqp_channel_open(state, channel)
        try check(amqp_get_rpc_reply(state), "channel.open")
        isUsable = true
    }

    /// Opens our channel again after the broker closed it (a failed declaration); the connection
    /// itself is still fine then.
    func reopenChannel() throws(AMQPError) {
        amqp_channel_open(state, channel)
        try check(amqp_get_rpc_reply(state), "channel.open")
        isUsable = true
    }

    private func makeSocket() throws(AMQPError) -> OpaquePointer {
        guard let tls = configuration.tls else {
            guard let socket = amqp_tcp_socket_new(state) else {
                throw .connectionFailed(endpoint: configuration.endpoint, reason: "cannot create a TCP socket")
            }
            return socket
        }
        guard let socket = amqp_ssl_socket_new(state) else {
            throw .tlsFailed(endpoint: configuration.endpoint, reason: "cannot create a TLS socket")
        }
        amqp_ssl_socket_set_verify_peer(socket, tls.verifyPeer ? 1 : 0)
        amqp_ssl_socket_set_verify_hostname(socket, tls.verifyHostname ? 1 : 0)
        guard amqp_ssl_socket_set_ssl_versions(socket, AMQP_TLSv1_2, AMQP_TLSvLATEST) == AMQP_STATUS_OK.rawValue else {
            throw .tlsFailed(endpoint: configuration.endpoint, reason: "TLS 1.2 or newer is not available")
        }
        let caFile = tls.caFile ?? TLSConfiguration.systemCABundle
        guard amqp_ssl_socket_set_cacert(socket, caFile) == AMQP_STATUS_OK.rawValue else {
            throw .tlsFailed(endpoint: configuration.endpoint, reason: "cannot load CA file \(caFile)")
        }
        if let certificate = tls.certificateFile, let key = tls.keyFile {
            guard amqp_ssl_socket_set_key(socket, certificate, key) == AMQP_STATUS_OK.rawValue else {
                throw .tlsFailed(endpoint: configuration.endpoint, reason: "cannot load certificate \(certificate) and key \(key)")
            }
        }
        return socket
    }

    private func openError(_ status: Int32) -> AMQPError {
        let reason = String(cString: amqp_error_string2(status))
        switch amqp_status_enum(status) {
        case AMQP_STATUS_TIMEOUT:
            return .timeout(operation: "connecting to \(configuration.endpoint) (\(configuration.connectTimeout))")
        case AMQP_STATUS_SSL_ERROR, AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED, AMQP_STATUS_SSL_PEER_VERIFY_FAILED,
             AMQP_STATUS_SSL_CONNECTION_FAILED:
            return .tlsFailed(endpoint: configuration.endpoint, reason: reason)
        case AMQP_STATUS_HOSTNAME_RESOLUTION_FAILED:
            return .connectionFailed(endpoint: configuration.endpoint, reason: "cannot resolve host name '\(configuration.host)'")
        default:
            return .connectionFailed(endpoint: configuration.endpoint, reason: "\(reason) (is the broker running?)")
        }
    }

    private func login() throws(AMQPError) {
        defer { arena.reset() }
        var capabilities: [String: FieldValue] = [
            "consumer_cancel_notify": true, "connection.blocked": true, "authentication_failure_close": true,
            "publisher_confirms": true, "basic.nack": true, "exchange_exchange_bindings": true,
        ]
        capabilities["per_consumer_qos"] = true
        var properties: [String: FieldValue] = ["capabilities": .table(capabilities), "product": "customer-worker", "platform": "Swift"]
        if let name = configuration.connectionName { properties["connection_name"] = .string(name) }
        var table = arena.table(properties)
        let heartbeatSeconds = Int32(configuration.heartbeat.components.seconds)
        let reply = cw_amqp_login_plain(state, configuration.vhost, 0, 131_072, heartbeatSeconds, &table,
                                        configuration.user, configuration.password)
        do {
            try check(reply, "login")
        } catch .connectionClosedByBroker(let code, let text) where code == 403 && !text.contains("vhost") {
            throw .authenticationFailed(user: configuration.user, endpoint: configuration.endpoint, detail: text)
        } catch .connectionClosedByBroker(let code, let text) where code == 530 || code == 403 {
            throw .vhostNotAccessible(vhost: configuration.vhost, detail: text)
        }
    }

    // MARK: Topology and channel settings

    func declare(_ topology: Topology) throws(AMQPError) {
        for exchange in topology.exchanges { try declare(exchange) }
        for queue in topology.queues { _ = try declare(queue) }
        for binding in topology.bindings { try bind(binding) }
        for binding in topology.exchangeBindings { try bind(binding) }
        for binding in topology.removedBindings { try remove(binding) }
        for binding in topology.removedExchangeBindings { try remove(binding) }
    }

    func declare(_ exchange: Topology.Exchange) throws(AMQPError) {
        defer { arena.reset() }
        amqp_exchange_declare(state, channel, arena.bytes(exchange.name), arena.bytes(exchange.type), 0,
                              exchange.durable ? 1 : 0, 0, 0, arena.table(exchange.arguments))
        try check(amqp_get_rpc_reply(state), "exchange.declare '\(exchange.name)'")
    }

    /// Queues the broker already had as an earlier version declared them, kept as they are
    /// (`Topology.Queue.earlierArguments`), by name; the session logs them.
    private(set) var keptAsDeclaredEarlier: Set<String> = []

    /// Returns the queue's name (the broker's choice when `queue.name` is empty). A queue the
    /// broker has with other arguments (406) is declared again with its `earlierArguments`, if
    /// it has them, on a reopened channel.
    @discardableResult
    func declare(_ queue: Topology.Queue) throws(AMQPError) -> String {
        do {
            return try declare(queue, arguments: queue.arguments)
        } catch .channelClosedByBroker(let operation, let code, let text) {
            guard code == 406, let earlier = queue.earlierArguments else { throw .channelClosedByBroker(operation: operation, code: code, text: text) }
            try reopenChannel()
            let name = try declare(queue, arguments: earlier)
            keptAsDeclaredEarlier.insert(queue.name)
            return name
        }
    }

    private func declare(_ queue: Topology.Queue, arguments: [String: FieldValue]) throws(AMQPError) -> String {
        defer { arena.reset() }
        let ok = amqp_queue_declare(state, channel, arena.bytes(queue.name), 0, queue.durable ? 1 : 0,
                                    queue.exclusive ? 1 : 0, queue.autoDelete ? 1 : 0, arena.table(arguments))
        try check(amqp_get_rpc_reply(state), "queue.declare '\(queue.name)'")
        return ok.map { String(amqpBytes: $0.pointee.queue) } ?? queue.name
    }

    func bind(_ binding: Topology.Binding) throws(AMQPError) {
        defer { arena.reset() }
        amqp_queue_bind(state, channel, arena.bytes(binding.queue), arena.bytes(binding.exchange),
                        arena.bytes(binding.routingKey), amqp_empty_table)
        try check(amqp_get_rpc_reply(state), "queue.bind '\(binding.queue)' to '\(binding.exchange)'")
    }

    func bind(_ binding: Topology.ExchangeBinding) throws(AMQPError) {
        defer { arena.reset() }
        amqp_exchange_bind(state, channel, arena.bytes(binding.destination), arena.bytes(binding.source),
                           arena.bytes(binding.routingKey), amqp_empty_table)
        try check(amqp_get_rpc_reply(state), "exchange.bind '\(binding.destination)' to '\(binding.source)'")
    }

    /// Removes a binding if it exists (`queue.unbind`). A broker that answers 404 (no such queue,
    /// exchange or binding) closes the channel: it is reopened, and nothing else changes.
    func remove(_ binding: Topology.Binding) throws(AMQPError) {
        try removing("queue.unbind '\(binding.queue)' from '\(binding.exchange)'") {
            _ = amqp_queue_unbind(state, channel, arena.bytes(binding.queue), arena.bytes(binding.exchange),
                                  arena.bytes(binding.routingKey), amqp_empty_table)
        }
    }

    /// Removes an exchange-to-exchange binding if it exists (`exchange.unbind`), as `remove(_:)`.
    func remove(_ binding: Topology.ExchangeBinding) throws(AMQPError) {
        try removing("exchange.unbind '\(binding.destination)' from '\(binding.source)'") {
            _ = amqp_exchange_unbind(state, channel, arena.bytes(binding.destination), arena.bytes(binding.source),
                                     arena.bytes(binding.routingKey), amqp_empty_table)
        }
    }

    private func removing(_ operation: String, _ request: () -> Void) throws(AMQPError) {
        do {
            defer { arena.reset() }
            request()
            try check(amqp_get_rpc_reply(state), operation)
        } catch .channelClosedByBroker(let operation, let code, let text) {
            guard code == 404 else { throw .channelClosedByBroker(operation: operation, code: code, text: text) }
            try reopenChannel()
        }
    }

    func deleteQueue(_ name: String) throws(AMQPError) {
        defer { arena.reset() }
        amqp_queue_delete(state, channel, arena.bytes(name), 0, 0)
        try check(amqp_get_rpc_reply(state), "queue.delete '\(name)'")
    }

    func deleteExchange(_ name: String) throws(AMQPError) {
        defer { arena.reset() }
        amqp_exchange_delete(state, channel, arena.bytes(name), 0)
        try check(amqp_get_rpc_reply(state), "exchange.delete '\(name)'")
    }

    /// Returns how many messages the purge removed.
    @discardableResult
    func purgeQueue(_ name: String) throws(AMQPError) -> UInt32 {
        defer { arena.reset() }
        let ok = amqp_queue_purge(state, channel, arena.bytes(name))
        try check(amqp_get_rpc_reply(state), "queue.purge '\(name)'")
        return ok?.pointee.message_count ?? 0
    }

    /// The queue's ready messages (not those delivered and unacknowledged), by a passive declare.
    func messageCount(queue name: String) throws(AMQPError) -> UInt32 {
        defer { arena.reset() }
        let ok = amqp_queue_declare(state, channel, arena.bytes(name), 1, 0, 0, 0, amqp_empty_table)
        try check(amqp_get_rpc_reply(state), "queue.declare (passive) '\(name)'")
        return ok?.pointee.message_count ?? 0
    }

    func setPrefetch(_ count: UInt16) throws(AMQPError) {
        amqp_basic_qos(state, channel, 0, count, 0)
        try check(amqp_get_rpc_reply(state), "basic.qos")
    }

    func enableConfirms() throws(AMQPError) {
        amqp_confirm_select(state, channel)
        try check(amqp_get_rpc_reply(state), "confirm.select")
    }

    func consume(queue: String, consumerTag: String, noAck: Bool, exclusive: Bool,
                 arguments: [String: FieldValue]) throws(AMQPError) -> String {
        defer { arena.reset() }
        let ok = amqp_basic_consume(state, channel, arena.bytes(queue), arena.bytes(consumerTag), 0, noAck ? 1 : 0,
                                    exclusive ? 1 : 0, arena.table(arguments))
        try check(amqp_get_rpc_reply(state), "basic.consume '\(queue)'")
        return ok.map { String(amqpBytes: $0.pointee.consumer_tag) } ?? consumerTag
    }

    /// Stops a consumer (`basic.cancel`, waiting for its cancel-ok). Deliveries the broker sent
    /// before the cancel-ok are queued by rabbitmq-c and read by the next `readAvailable`.
    func cancel(consumerTag: String) throws(AMQPError) {
        defer { arena.reset() }
        amqp_basic_cancel(state, channel, arena.bytes(consumerTag))
        try check(amqp_get_rpc_reply(state), "basic.cancel '\(consumerTag)'")
    }

    // MARK: Publishing and acknowledging

    /// Adds one message to the publishes waiting for `flush`, which writes them all at once
    /// (after 256 KiB of them, this writes those first). A message the client cannot encode
    /// throws `.unencodable` and adds nothing, so the connection stays usable: a method frame
    /// without its header would make the broker close it.
    func publish(_ message: OutgoingMessage) throws(AMQPError) {
        if outbound.count >= Self.flushThreshold { try flush() }
        // 4096 is the smallest frame-max the protocol allows; 0 means not yet negotiated.
        let frameMax = max(4096, Int(amqp_get_frame_max(state)))
        try outbound.append(message, channel: channel, frameMax: frameMax)
        guard !Self.writesFramesItself else { return }
        // A rabbitmq-c whose socket layout we do not know: its own call, three writes per message.
        outbound.removeAll()
        defer { arena.reset() }
        var properties = message.properties.cProperties(in: arena)
        lastWrite = .now
        let status = message.body.withUnsafeBufferPointer { body in
            amqp_basic_publish(state, channel, arena.bytes(message.exchange), arena.bytes(message.routingKey),
                               message.mandatory ? 1 : 0, 0, &properties,
                               amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
        }
        try checkStatus(status, "basic.publish")
    }

    /// Writes the publishes that wait, in as few system calls as the socket takes them (TLS: one
    /// per record), waiting for the socket while the broker lives (`waitForSocket`). Whatever
    /// happens, nothing waits afterwards: after a failure the connection is not usable.
    func flush() throws(AMQPError) {
        guard !outbound.isEmpty else { return }
        defer { outbound.removeAll() }
        lastWrite = .now
        let bytes = outbound.bytes
        var written = 0
        while written < bytes.count {
            let result = cw_amqp_socket_send(state, bytes.baseAddress! + written, bytes.count - written)
            if result > 0 {
                written += result
                continue
            }
            guard result == CW_STATUS_SOCKET_NEEDWRITE || result == CW_STATUS_SOCKET_NEEDREAD else {
                isUsable = false
                let reason = result == 0 ? "the socket took no bytes" : String(cString: amqp_error_string2(Int32(result)))
                throw .connectionLost(operation: "basic.publish", reason: reason)
            }
            try waitForSocket(readable: result == CW_STATUS_SOCKET_NEEDREAD)
        }
    }

    /// Waits until the socket takes bytes again (or, for TLS, has some to read). While the broker
    /// blocks publishers (a memory or disk alarm) it stops reading, for as long as the alarm
    /// lasts, so a write waits as long as the broker is alive: its heartbeats keep arriving,
    /// unread, in the socket's buffer. Two heartbeat intervals with no new byte mean it is gone
    /// (rabbitmq-c's own rule). Without heartbeats it waits until TCP gives up, as rabbitmq-c does.
    private func waitForSocket(readable: Bool) throws(AMQPError) {
        var descriptor = pollfd(fd: socketDescriptor, events: Int16(readable ? POLLIN : POLLOUT), revents: 0)
        let window = heartbeat * 2
        var unread = unreadBytes()
        while true {
            let ready = poll(&descriptor, 1, window == .zero ? -1 : Int32(window.components.seconds * 1000))
            if ready > 0 { return }
            if ready < 0 {
                guard errno == EINTR else {
                    isUsable = false
                    throw .connectionLost(operation: "basic.publish", reason: "poll: \(String(cString: strerror(errno)))")
                }
                continue
            }
            let now = unreadBytes()
            guard now > unread else {
                isUsable = false
                throw .timeout(operation: "basic.publish (the broker took no byte and sent none for \(window))")
            }
            unread = now
        }
    }

    /// Bytes that arrived on the socket and are not read yet.
    private func unreadBytes() -> Int32 {
        var count: Int32 = 0
        return ioctl(socketDescriptor, UInt(FIONREAD), &count) == 0 ? count : 0
    }

    /// Publishes wait in the buffer until this many bytes, then they are written before the next.
    private static let flushThreshold = 256 * 1024
    /// Whether `flush` can write through rabbitmq-c's socket (its layout is known for this version).
    private static let writesFramesItself = cw_amqp_socket_layout_is_known() != 0

    func ack(_ deliveryTag: UInt64, multiple: Bool) throws(AMQPError) {
        lastWrite = .now
        try checkStatus(amqp_basic_ack(state, channel, deliveryTag, multiple ? 1 : 0), "basic.ack")
    }

    func nack(_ deliveryTag: UInt64, multiple: Bool, requeue: Bool) throws(AMQPError) {
        lastWrite = .now
        try checkStatus(amqp_basic_nack(state, channel, deliveryTag, multiple ? 1 : 0, requeue ? 1 : 0), "basic.nack")
    }

    func reject(_ deliveryTag: UInt64, requeue: Bool) throws(AMQPError) {
        lastWrite = .now
        try checkStatus(amqp_basic_reject(state, channel, deliveryTag, requeue ? 1 : 0), "basic.reject")
    }

    // MARK: Reading what the broker sends

    /// The socket to poll for input; -1 when there is none.
    var socketDescriptor: Int32 { amqp_get_sockfd(state) }

    /// The heartbeat interval agreed with the broker (0: none).
    var heartbeat: Duration { .seconds(Int(amqp_get_heartbeat(state))) }

    /// Sends a heartbeat frame (the loop does when it wrote nothing for half the interval).
    func sendHeartbeat() throws(AMQPError) {
        var frame = amqp_frame_t()
        frame.frame_type = UInt8(AMQP_FRAME_HEARTBEAT)
        frame.channel = 0
        lastWrite = .now
        try checkStatus(amqp_send_frame(state, &frame), "sending a heartbeat")
    }

    /// Reads what already arrived without waiting: frames rabbitmq-c queued during an RPC or
    /// holds in its buffer first, then the socket. rabbitmq-c also sends a heartbeat that is due
    /// and reports missed ones here. Broker-initiated closes are answered and thrown.
    func readAvailable() throws(AMQPError) -> ReadResult {
        defer { amqp_maybe_release_buffers(state) }
        var frame = amqp_frame_t()
        var immediately = timeval(tv_sec: 0, tv_usec: 0)
        let status = amqp_simple_wait_frame_noblock(state, &frame, &immediately)
        if status == AMQP_STATUS_TIMEOUT.rawValue { return .nothing }
        try checkStatus(status, "reading frames")
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { return .skipped }
        guard let event = try event(from: frame) else { return .skipped }
        return .event(event)
    }

    private func event(from frame: amqp_frame_t) throws(AMQPError) -> InboundEvent? {
        let method = frame.payload.method
        switch method.id {
        case CW_BASIC_DELIVER:
            let deliver = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            let (body, properties) = try readContent(channel: frame.channel, operation: "reading a delivery")
            return .delivery(deliveryTag: deliver.delivery_tag, consumerTag: consumerTags.string(deliver.consumer_tag),
                             redelivered: deliver.redelivered != 0, exchange: exchanges.string(deliver.exchange),
                             routingKey: routingKeys.string(deliver.routing_key), body: body, properties: properties)
        case CW_BASIC_RETURN:
            let returned = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            let (_, properties) = try readContent(channel: frame.channel, operation: "reading a returned message")
            return .returned(replyCode: returned.reply_code, replyText: String(amqpBytes: returned.reply_text),
                             exchange: String(amqpBytes: returned.exchange), routingKey: String(amqpBytes: returned.routing_key),
                             properties: properties)
        case CW_BASIC_ACK:
            let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            return .ack(deliveryTag: ack.delivery_tag, multiple: ack.multiple != 0)
        case CW_BASIC_NACK:
            let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            return .nack(deliveryTag: nack.delivery_tag, multiple: nack.multiple != 0)
        case CW_BASIC_CANCEL:
            let cancel = method.decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            return .consumerCancelled(consumerTag: String(amqpBytes: cancel.consumer_tag))
        case CW_CONNECTION_BLOCKED:
            let blocked = method.decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            return .blocked(reason: String(amqpBytes: blocked.reason))
        case CW_CONNECTION_UNBLOCKED:
            return .unblocked
        case CW_CHANNEL_CLOSE, CW_CONNECTION_CLOSE:
            throw brokerClosed(method, operation: "reading frames")
        default:
            return nil
        }
    }

    /// The content header and body frames after a `basic.deliver` or `basic.return`. Not
    /// `amqp_read_message`: it clones the decoded properties first, which recurses once per
    /// nesting level of the headers and fails on a header with an empty key (leaving the body
    /// unread, so the connection is lost and the command redelivered). The properties are copied
    /// out of the header frame directly instead, where `MessageProperties` bounds their nesting.
    private func readContent(channel: amqp_channel_t, operation: String) throws(AMQPError) -> ([UInt8], MessageProperties) {
        var frame = amqp_frame_t()
        try nextContentFrame(&frame, channel: channel, operation: operation)
        guard frame.frame_type == UInt8(AMQP_FRAME_HEADER), let decoded = frame.payload.properties.decoded else {
            throw unexpected(frame, operation: operation)
        }
        let properties = MessageProperties(decoded.assumingMemoryBound(to: amqp_basic_properties_t.self).pointee,
                                           repeating: &propertyStrings)
        guard frame.payload.properties.body_size <= UInt64(Int.max) else { throw unexpected(frame, operation: operation) }
        let size = Int(frame.payload.properties.body_size)
        var body: [UInt8] = []
        body.reserveCapacity(size)
        while body.count < size {
            try nextContentFrame(&frame, channel: channel, operation: operation)
            guard frame.frame_type == UInt8(AMQP_FRAME_BODY) else { throw unexpected(frame, operation: operation) }
            let fragment = frame.payload.body_fragment
            guard fragment.len <= size - body.count else { throw unexpected(frame, operation: operation) }
            if fragment.len > 0, let bytes = fragment.bytes {
                body.append(contentsOf: UnsafeRawBufferPointer(start: bytes, count: fragment.len))
            }
        }
        return (body, properties)
    }

    /// The next frame, which the broker sends right behind the last (within the RPC timeout);
    /// one on another channel than the content's is a protocol error, unless the broker closes.
    private func nextContentFrame(_ frame: inout amqp_frame_t, channel: amqp_channel_t, operation: String) throws(AMQPError) {
        var timeout = timeval(configuration.rpcTimeout)
        try checkStatus(amqp_simple_wait_frame_noblock(state, &frame, &timeout), operation)
        guard frame.channel == channel || frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { throw unexpected(frame, operation: operation) }
    }

    /// A frame that does not belong inside a message's content: the broker closing, or bad data.
    private func unexpected(_ frame: amqp_frame_t, operation: String) -> AMQPError {
        if frame.frame_type == UInt8(AMQP_FRAME_METHOD) { return brokerClosed(frame.payload.method, operation: operation) }
        isUsable = false
        return .connectionLost(operation: operation, reason: "unexpected frame of type \(frame.frame_type) in a message's content")
    }

    // MARK: Closing

    /// Closes channel and connection politely (bounded by the RPC timeout) if still usable.
    func close() {
        guard isUsable else { return }
        isUsable = false
        _ = amqp_channel_close(state, channel, AMQP_REPLY_SUCCESS)
        _ = amqp_connection_close(state, AMQP_REPLY_SUCCESS)
    }

    // MARK: Error mapping

    private func checkStatus(_ status: Int32, _ operation: String) throws(AMQPError) {
        guard status != AMQP_STATUS_OK.rawValue else { return }
        isUsable = false
        if status == AMQP_STATUS_TIMEOUT.rawValue { throw .timeout(operation: operation) }
        throw .connectionLost(operation: operation, reason: String(cString: amqp_error_string2(status)))
    }

    private func check(_ reply: amqp_rpc_reply_t, _ operation: String) throws(AMQPError) {
        lastWrite = .now  // every RPC wrote its request
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            throw brokerClosed(reply.reply, operation: operation)
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            try checkStatus(reply.library_error, operation)
            throw .connectionLost(operation: operation, reason: "unexpected library state")
        default:
            isUsable = false
            throw .connectionLost(operation: operation, reason: "no reply")
        }
    }

    /// Answers a broker's `channel.close`/`connection.close` as the protocol requires and turns it
    /// into an error. Either way this connection is done: the session reconnects.
    private func brokerClosed(_ method: amqp_method_t, operation: String) -> AMQPError {
        isUsable = false
        if method.id == CW_CONNECTION_CLOSE {
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t()
            _ = amqp_send_method(state, 0, CW_CONNECTION_CLOSE_OK, &ok)
            return .connectionClosedByBroker(code: close.reply_code, text: String(amqpBytes: close.reply_text))
        }
        if method.id == CW_CHANNEL_CLOSE {
            let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            var ok = amqp_channel_close_ok_t()
            _ = amqp_send_method(state, channel, CW_CHANNEL_CLOSE_OK, &ok)
            return .channelClosedByBroker(operation: operation, code: close.reply_code, text: String(amqpBytes: close.reply_text))
        }
        return .connectionLost(operation: operation, reason: "unexpected method 0x\(String(method.id, radix: 16))")
    }
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}

/// A name read off the wire, kept with its bytes so that the same bytes again give the same
/// `String` (shared, not allocated again).
struct RecentString {
    private var bytes: [UInt8] = []
    private var text = ""

    /// `String(amqpBytes:)` of `wire`, reusing the last one when the bytes are the same.
    mutating func string(_ wire: amqp_bytes_t) -> String {
        let incoming = UnsafeRawBufferPointer(start: wire.bytes, count: wire.len)
        let same = bytes.withUnsafeBytes { $0.count == incoming.count && ($0.isEmpty || memcmp($0.baseAddress!, incoming.baseAddress!, $0.count) == 0) }
        if !same {
            bytes = Array(incoming)
            text = String(amqpBytes: wire)
        }
        return text
    }
}

/// The string properties that a stream of deliveries mostly repeats, each decoded once per run of
/// equal bytes (`RecentString`): `application/json` and a sender's app id are 16 bytes or more,
/// an allocation each per delivery otherwise. Ids (`message_id`, `correlation_id`) differ from
/// message to message and are decoded each time.
struct RecentPropertyStrings {
    var contentType = RecentString()
    var contentEncoding = RecentString()
    var replyTo = RecentString()
    var type = RecentString()
    var userID = RecentString()
    var appID = RecentString()
    var headers = RecentHeaders()
}

/// A delivery's headers, decoded once per run of equal tables. A sender's commands carry the
/// same flat table (its `x-api-key`) one after another, and decoding it afresh cost a dictionary
/// and the key's `String` per delivery. The last flat table is kept as its wire form (each
/// entry's key, kind and value bytes, in order): equal bytes give the same decoded dictionary, a
/// retain. A table that nests, or any difference at all, is decoded afresh.
struct RecentHeaders {
    private var lastWire: [UInt8] = []
    private var wire: [UInt8] = []
    private var decoded: [String: FieldValue] = [:]

    /// `FieldValue.decodeHeaders(table)`, reusing the last result when the table is the same.
    mutating func headers(_ table: amqp_table_t) -> [String: FieldValue]? {
        guard FieldValue.nests(table, within: FieldValue.maximumNesting) else { return nil }
        wire.removeAll(keepingCapacity: true)
        guard Self.flatten(table, into: &wire) else { return FieldValue.decodeTable(table) }
        let same = wire.withUnsafeBytes { new in
            lastWire.withUnsafeBytes { last in
                new.count == last.count && (new.isEmpty || memcmp(new.baseAddress!, last.baseAddress!, new.count) == 0)
            }
        }
        if !same {
            decoded = FieldValue.decodeTable(table)
            swap(&wire, &lastWire)
        }
        return decoded
    }

    /// Appends the table's entries (length-prefixed key, kind, value) to `wire`; false when an
    /// entry is a table or an array (not kept: decoded afresh each time).
    private static func flatten(_ table: amqp_table_t, into wire: inout [UInt8]) -> Bool {
        guard table.num_entries > 0, let entries = table.entries else { return true }
        func append(_ bytes: amqp_bytes_t) {
            withUnsafeBytes(of: UInt64(bytes.len)) { wire.append(contentsOf: $0) }
            if bytes.len > 0 { wire.append(contentsOf: UnsafeRawBufferPointer(start: bytes.bytes, count: bytes.len)) }
        }
        for index in 0..<Int(table.num_entries) {
            let entry = entries[index]
            append(entry.key)
            wire.append(entry.value.kind)
            switch amqp_field_value_kind_t(UInt32(entry.value.kind)) {
            case AMQP_FIELD_KIND_TABLE, AMQP_FIELD_KIND_ARRAY:
                return false
            case AMQP_FIELD_KIND_UTF8, AMQP_FIELD_KIND_BYTES:
                append(entry.value.value.bytes)
            default:
                // Every other kind fits in the union's first 8 bytes (the decimal's two fields
                // included); bytes a narrower kind leaves unset can only make equal values
                // compare unequal, which decodes afresh.
                withUnsafeBytes(of: entry.value.value) { wire.append(contentsOf: $0.prefix(8)) }
            }
        }
        return true
    }
}
