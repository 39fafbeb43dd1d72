import AMQP
import BrokerTestSupport
import Testing

/// The lifecycle's pure transitions, driven without a broker.
@Suite("Connection state machine", .closesResources)
struct ConnectionStateMachineTests {
    private let refused = AMQPError.connectionFailed(endpoint: "127.0.0.1:1", reason: "refused")
    private let lost = AMQPError.connectionLost(operation: "reading frames", reason: "socket closed")

    @Test func theFirstRequestConnectsAndLaterOnesRun() {
        var machine = ConnectionStateMachine()
        #expect(machine.requestArrived() == .connect)
        #expect(machine.state == .connecting)
        #expect(machine.requestArrived() == .park)
        #expect(machine.connected() == .resume(generation: 1, recovered: false))
        #expect(machine.state == .open(generation: 1))
        #expect(machine.requestArrived() == .run)
        #expect(machine.reconnects == 0)
    }

    @Test func aFailedFirstConnectFailsTheRequestAndTheNextOneTriesAgain() {
        var machine = ConnectionStateMachine()
        _ = machine.requestArrived()
        #expect(machine.connectFailed(refused) == .fail(refused))
        #expect(machine.state == .idle)
        #expect(machine.requestArrived() == .connect)
    }

    @Test func aLostConnectionRecoversWithGrowingRoundsAndANewGeneration() {
        var machine = ConnectionStateMachine()
        _ = machine.requestArrived()
        _ = machine.connected()
        #expect(machine.connectionLost(lost) == .scheduleReconnect(round: 1, error: lost))
        #expect(machine.requestArrived() == .park)
        #expect(machine.connectFailed(refused) == .scheduleReconnect(round: 2, error: refused))
        #expect(machine.connectFailed(refused) == .scheduleReconnect(round: 3, error: refused))
        #expect(machine.connected() == .resume(generation: 2, recovered: true))
        #expect(machine.reconnects == 1)
        #expect(machine.generation == 2)
        // A second loss report for the same connection changes nothing.
        _ = machine.connectionLost(lost)
        #expect(machine.connectionLost(lost) == .none)
    }

    @Test func recoveryGivesUpAfterItsRounds() {
        var machine = ConnectionStateMachine(maximumRounds: 2)
        _ = machine.requestArrived()
        _ = machine.connected()
        _ = machine.connectionLost(lost)
        #expect(machine.connectFailed(refused) == .scheduleReconnect(round: 2, error: refused))
        #expect(machine.connectFailed(refused) == .failWaiting(refused))
        #expect(machine.state == .idle)
    }

    @Test func blockedAndUnblocked() {
        var machine = ConnectionStateMachine()
        #expect(machine.blockedByBroker(reason: "memory") == .none)
        #expect(machine.state == .idle, "not connected: nothing to block")
        _ = machine.requestArrived()
        _ = machine.connected()
        _ = machine.blockedByBroker(reason: "memory")
        #expect(machine.isBlocked && machine.isOpen)
        #expect(machine.requestArrived() == .run, "acks and set-up still go through")
        #expect(machine.unblockedByBroker() == .flushPublishes)
        #expect(machine.state == .open(generation: 1))
        _ = machine.blockedByBroker(reason: "disk")
        #expect(machine.connectionLost(lost) == .scheduleReconnect(round: 1, error: lost))
        #expect(!machine.isBlocked)
    }

    @Test func closingIsFinal() {
        var machine = ConnectionStateMachine()
        _ = machine.requestArrived()
        _ = machine.connected()
        #expect(machine.closeRequested() == .closeConnection)
        #expect(machine.closeRequested() == .none)
        #expect(machine.requestArrived() == .fail(.sessionClosed))
        #expect(machine.connectionLost(lost) == .none)
        #expect(machine.connected() == .none)
    }

    @Test func nodesAreTriedRoundRobinMovingOnAfterALoss() {
        var rotation = NodeRotation(count: 3)
        #expect(rotation.round(movingOn: false) == [0, 1, 2])
        rotation.use(1)
        #expect(rotation.round(movingOn: true) == [2, 0, 1])
        #expect(rotation.round(movingOn: false) == [1, 2, 0])
        #expect(NodeRotation(count: 1).round(movingOn: true) == [0])
    }
}
