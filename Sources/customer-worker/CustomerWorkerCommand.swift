import ArgumentParser

/// The `customer-worker` executable: parsing only; the work lives in the library targets.
@main
struct CustomerWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "customer-worker",
        abstract: "Creates customers from RabbitMQ commands and replies with the result.",
        subcommands: [Run.self, Publish.self, Replies.self, Health.self, Migrate.self, Merchants.self, Keys.self, Plans.self, CopyDatabase.self, DeadLetters.self]
    )
}
