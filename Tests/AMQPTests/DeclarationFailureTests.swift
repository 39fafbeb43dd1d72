import AMQP
import Testing

/// Which refusals of a declaration are worth declaring again (`AMQPSession.declare` does, a few
/// times): the broker's exact texts.
@Suite("AMQP: declarations refused for now")
struct DeclarationFailureTests {
    @Test func aQuorumQueueWithoutALeaderInTimeIsTransient() {
        // RabbitMQ 3.10 on a loaded node (seen in a test run's broker log).
        let refused = AMQPError.connectionClosedByBroker(code: 541, text: """
            INTERNAL_ERROR - Cannot declare quorum queue 'test.health.59062284.create' in vhost '/' on node \
            'customer-worker-5673@localhost' with leader on node 'customer-worker-5673@localhost': cluster_not_formed
            """)
        #expect(refused.isTransientDeclarationFailure)
    }

    @Test func aMetadataStoreTimeoutIsTransient() {
        // RabbitMQ 4 (Khepri) when the metadata store does not answer in time.
        let refused = AMQPError.connectionClosedByBroker(code: 541, text: """
            INTERNAL_ERROR - Could not declare quorum queue 'orders' in vhost '/' on node 'rabbit@a' because the \
            metadata store operation timed out
            """)
        #expect(refused.isTransientDeclarationFailure)
    }

    @Test(arguments: [
        // Arguments that differ from the queue's: the same every time.
        AMQPError.channelClosedByBroker(operation: "queue.declare", code: 406, text: """
            PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'orders' in vhost '/': received 'quorum' but current is 'classic'
            """),
        // A missing plugin.
        .connectionClosedByBroker(code: 503, text: "COMMAND_INVALID - invalid exchange type 'x-consistent-hash'"),
        // Another internal error.
        .connectionClosedByBroker(code: 541, text: "INTERNAL_ERROR - something else"),
        .connectionLost(operation: "queue.declare", reason: "connection reset by peer"),
    ])
    func otherRefusalsAreNot(_ error: AMQPError) {
        #expect(!error.isTransientDeclarationFailure)
    }
}
