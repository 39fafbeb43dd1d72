import CustomerDomain
import Foundation

extension CustomerStorage {
    /// Handles commands in order inside one transaction: authentication, validation, idempotency,
    /// and the customer, subscription and processed-request rows. Returns one reply per command,
    /// in order. Throws only when the database fails; then nothing was committed. A deadlock or
    /// serialization failure runs the batch again (a few times) instead of failing it.
    /// `now` is truncated to whole milliseconds, the precision of replies and rows.
    /// With `finishingAttempt`, the transaction also removes that handling-attempt marker.
    public func handle(_ commands: [IncomingCommand], now: Date, finishingAttempt attemptKey: String? = nil) async throws -> [ReplyRecord] {
        guard !commands.isEmpty else { return [] }
        // Parsing needs no lock, so it happens before the transaction starts.
        let batch = CreateCustomerBatch(commands: commands, now: Timestamp(now))
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await transaction("handle commands") { transaction in
                    let replies = try await batch.run(in: transaction)
                    if let attemptKey { try await transaction.deleteAttempt(key: attemptKey) }
                    return replies
                }
            } catch where attempt < CreateCustomerBatch.conflictAttempts && isRetryable(error) {
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...(10 * attempt))))
            }
        }
    }
}

/// The create-customer rules for one batch. It reads what it needs with one statement of each
/// kind, decides every reply, then writes all new rows at once, sorted by idempotency key so two
/// batches touching the same keys take their row locks in the same order and cannot deadlock.
struct CreateCustomerBatch: Sendable {
    static let conflictAttempts = 10

    let commands: [IncomingCommand]
    let parsed: [Result<CreateCustomerCommand, CommandRejection>]
    let now: Timestamp

    init(commands: [IncomingCommand], now: Timestamp) {
        self.commands = commands
        self.parsed = commands.map { CreateCustomerCommand.parse(body: $0.body, contentType: $0.contentType) }
        self.now = now
    }

    /// A command that passed authentication and validation: it creates, replays or conflicts.
    private struct Candidate {
        var index: Int
        var key: String
        var merchantID: String
        var command: CreateCustomerCommand
    }

    /// Rows of one customer created by this batch.
    private struct Creation {
        var customer: NewCustomer
        var subscription: Subscription?
        var record: ProcessedRequest
    }

    func run<T: StorageTransaction>(in transaction: T) async throws -> [ReplyRecord] {
        var replies = [ReplyRecord?](repeating: nil, count: commands.count)
        let candidates = try await authenticateAndValidate(transaction, replies: &replies)
        guard !candidates.isEmpty else { return replies.map { $0! } }

        let keys = Set(candidates.map(\.key)).sorted()
        var known: [String: ProcessedRequest] = [:]
        for record in try await transaction.processedRequests(keys: keys) { known[record.idempotencyKey] = record }
        let defaultPlans = try await transaction.defaultPlans(merchantIDs: Set(candidates.map(\.merchantID)).sorted())

        // A command seen before replays its stored reply when it is the same command and is a
        // conflict when it differs. Records made by this batch join `known`, so a duplicate inside
        // the batch behaves exactly like one from an earlier batch.
        var creations: [Creation] = []
        for candidate in candidates {
            if let record = known[candidate.key] {
                replies[candidate.index] = resolve(candidate, against: record)
                continue
            }
            let creation = try create(candidate, defaultPlan: defaultPlans[candidate.merchantID])
            known[candidate.key] = creation.record
            replies[candidate.index] = ReplyRecord(
                type: .customerCreated, idempotencyKey: candidate.key, messageID: creation.record.messageID,
                body: creation.record.replyBody, replayed: false, errorCode: nil)
            creations.append(creation)
        }

        creations.sort { $0.record.idempotencyKey < $1.record.idempotencyKey }
        let inserted = try await transaction.insertCustomers(creations.map(\.customer))
        let won = creations.filter { inserted.contains($0.customer.id) }
        let subscriptions = won.compactMap(\.subscription)
        if !subscriptions.isEmpty { try await transaction.insertSubscriptions(subscriptions) }
        if !won.isEmpty { try await transaction.insertProcessedRequests(won.map(\.record), now: now) }

        let lost = creations.filter { !inserted.contains($0.customer.id) }
        if !lost.isEmpty {
            try await settleLostRaces(lost, candidates: candidates, transaction, replies: &replies)
        }
        return replies.map { $0! }
    }

    /// Another transaction created these customers first (its commit is visible now: the insert
    /// waited for it), or a customer exists without a processed record. Every command of the batch
    /// with such a key replays the stored reply or is a conflict with the existing customer.
    private func settleLostRaces<T: StorageTransaction>(_ lost: [Creation], candidates: [Candidate], _ transaction: T,
                                                        replies: inout [ReplyRecord?]) async throws {
        let lostKeys = Set(lost.map(\.record.idempotencyKey))
        var records: [String: ProcessedRequest] = [:]
        for record in try await transaction.processedRequests(keys: lostKeys.sorted()) { records[record.idempotencyKey] = record }
        let unrecorded = lost.filter { records[$0.record.idempotencyKey] == nil }.map(\.customer.reference)
        let existing = unrecorded.isEmpty ? [:] : try await transaction.customerIDs(unrecorded)
        for candidate in candidates where lostKeys.contains(candidate.key) {
            if let record = records[candidate.key] {
                replies[candidate.index] = resolve(candidate, against: record)
            } else {
                let reference = CustomerReference(merchantID: candidate.merchantID, externalID: candidate.command.externalId)
                replies[candidate.index] = conflict(candidate, existingCustomerID: existing[reference])
            }
        }
    }

    /// Authenticates every command (one look-up for the batch's keys) and parses its body; fills
    /// the failure replies and returns the commands that go on.
    private func authenticateAndValidate<T: StorageTransaction>(_ transaction: T, replies: inout [ReplyRecord?]) async throws -> [Candidate] {
        let keyIDs = Set(commands.compactMap { $0.apiKey.flatMap { APIKeys.keyID(from: $0)?.id } })
        var stored: [String: StoredAPIKey] = [:]
        if !keyIDs.isEmpty {
            for key in try await transaction.apiKeys(ids: keyIDs.sorted()) { stored[key.id] = key }
        }
        var candidates: [Candidate] = []
        for (index, command) in commands.enumerated() {
            if command.headersTooDeep {
                replies[index] = failure(.headersTooDeep, key: nil, body: command.body)
                continue
            }
            let merchantID: String
            switch Self.authenticate(command.apiKey, stored: stored) {
            case .merchant(let id): merchantID = id
            case .unauthorized(let reason):
                replies[index] = failure(reason.rejection, key: nil, body: command.body)
                continue
            case .forbidden:
                replies[index] = failure(.publishableAPIKey, key: nil, body: command.body)
                continue
            }
            switch parsed[index] {
            case .success(let valid):
                let key = idempotencyKey(merchantID: merchantID, externalID: valid.externalId)
                candidates.append(Candidate(index: index, key: key, merchantID: merchantID, command: valid))
            case .failure(let rejection):
                let key = rejection.validExternalId.map { idempotencyKey(merchantID: merchantID, externalID: $0) }
                replies[index] = failure(rejection, key: key, body: command.body)
            }
        }
        return candidates
    }

    static func authenticate(_ apiKey: String?, stored: [String: StoredAPIKey]) -> Authentication {
        guard let apiKey, !apiKey.isEmpty else { return .unauthorized(.missing) }
        guard let (keyID, _) = APIKeys.keyID(from: apiKey) else { return .unauthorized(.unknown) }
        return APIKeys.authenticate(apiKey, stored: stored[keyID])
    }

    /// Throws `PlanOutOfRange` when the stored default plan cannot give a valid subscription: the
    /// command fails on its own, and the worker dead-letters it alone.
    private func create(_ candidate: Candidate, defaultPlan: Plan?) throws -> Creation {
        let customerID = newIdentifier(now: now)
        let decision = try DefaultPlanRules.evaluate(
            defaultPlan: defaultPlan, for: candidate.command, isEligibleForTrial: true, now: now.date)
        var subscriptions: [Subscription] = []
        if let plan = decision.plan, let terms = decision.terms {
            subscriptions.append(Subscription(
                id: newIdentifier(now: now), customerId: customerID, merchantId: candidate.merchantID, plan: plan, terms: terms,
                now: now))
        }
        let customer = Customer(
            id: customerID, merchantId: candidate.merchantID, attributes: candidate.command, subscriptions: subscriptions, now: now)
        let reply = CustomerCreated(idempotencyKey: candidate.key, defaultPlan: decision.result, customer: customer)
        let record = ProcessedRequest(
            idempotencyKey: candidate.key, merchantID: candidate.merchantID, fingerprint: candidate.command.fingerprint,
            customerID: customerID, replyType: .customerCreated,
            messageID: ReplyMessageID.created(idempotencyKey: candidate.key), replyBody: reply.canonicalJSON())
        return Creation(
            customer: NewCustomer(id: customerID, merchantID: candidate.merchantID, attributes: candidate.command, createdAt: now),
            subscription: subscriptions.first, record: record)
    }

    private func resolve(_ candidate: Candidate, against record: ProcessedRequest) -> ReplyRecord {
        record.fingerprint == candidate.command.fingerprint
            ? record.replay : conflict(candidate, existingCustomerID: record.customerID)
    }

    private func conflict(_ candidate: Candidate, existingCustomerID: String?) -> ReplyRecord {
        failure(.externalIdConflict(candidate.command.externalId), key: candidate.key, body: commands[candidate.index].body,
                existingCustomerID: existingCustomerID)
    }

    /// Failures are not recorded: a corrected command with the same `externalId` may succeed later.
    private func failure(
        _ rejection: CommandRejection, key: String?, body: [UInt8], existingCustomerID: String? = nil
    ) -> ReplyRecord {
        let reply = CustomerCreateFailed(
            idempotencyKey: key, error: CustomerCreateError(rejection, existingCustomerId: existingCustomerID))
        return ReplyRecord(
            type: .customerCreateFailed, idempotencyKey: key,
            messageID: ReplyMessageID.failed(code: rejection.code, idempotencyKey: key, body: body),
            body: reply.canonicalJSON(), replayed: false, errorCode: rejection.code.rawValue)
    }
}
