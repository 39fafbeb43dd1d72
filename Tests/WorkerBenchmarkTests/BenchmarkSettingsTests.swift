import Foundation
import Testing
@testable import WorkerBenchmark

@Suite("Bench: settings and system-call counting")
struct BenchmarkSettingsTests {
    @Test func theDefaultsAreUsable() {
        #expect(BenchmarkSettings().problems.isEmpty)
    }

    @Test func eachBadValueIsRefusedWithItsOptionsRule() {
        func problems(_ change: (inout BenchmarkSettings) -> Void) -> [String] {
            var settings = BenchmarkSettings()
            change(&settings)
            return settings.problems
        }
        #expect(problems { $0.downstreamQueues = 9 } == ["--downstream-queues must be 0...8"])
        #expect(problems { $0.downstreamQueues = -1 } == ["--downstream-queues must be 0...8"])
        #expect(problems { $0.batchLingerMilliseconds = 1001 } == ["--batch-linger-ms must be 0...1000"])
        #expect(problems { $0.batchLingerMilliseconds = -1 } == ["--batch-linger-ms must be 0...1000"])
        #expect(problems { $0.replicas = 0 } == ["--replicas must be 1...64"])
        #expect(problems { $0.databaseSynchronous = "off" } == ["--database-synchronous must be full or normal"])
        #expect(problems { $0.backlog = true; $0.rate = 100 } == ["--backlog and --rate exclude each other: a backlog is queued at once"])
    }

    @Test func theBoundsThemselvesAreAccepted() {
        var settings = BenchmarkSettings()
        settings.downstreamQueues = 8
        settings.batchLingerMilliseconds = 0
        settings.syscalls = true
        #expect(settings.problems.isEmpty)
    }

    /// perf's CSV (`-x ,`): comments, `<not counted>` and zero counts are left out; names lose
    /// their tracepoint prefix; the scheduler's counts are kept apart from the system calls.
    @Test func perfCountsAreReadByName() throws {
        try withDirectory { directory in
            let counter = try SystemCallCounter(perf: "/usr/bin/perf", setpriv: "/usr/bin/setpriv", directory: directory, index: 1)
            try """
                # started on Wed Dec  2 13:40:01 2026

                <not counted>,,syscalls:sys_enter_rt_sigreturn,0,100.00,,
                0,,syscalls:sys_enter_getcpu,67139076,100.00,,
                60180,,syscalls:sys_enter_sendto,4120112044,100.00,,
                51400,,syscalls:sys_enter_pwrite64,4120112044,100.00,,
                12,,raw_syscalls:sys_enter,4120112044,100.00,,
                3120,,context-switches,4120112044,100.00,757.28,/sec
                41,,cpu-migrations,4120112044,100.00,9.95,/sec
                """.write(to: counter.output, atomically: true, encoding: .utf8)
            #expect(try counter.counts() == PerfCounts(systemCalls: ["sendto": 60180, "pwrite64": 51400], contextSwitches: 3120, cpuMigrations: 41))
        }
    }

    @Test func noCountsAtAllIsAnError() throws {
        try withDirectory { directory in
            let counter = try SystemCallCounter(perf: "/usr/bin/perf", setpriv: "/usr/bin/setpriv", directory: directory, index: 2)
            #expect(throws: BenchmarkError.self) { try counter.counts() }  // perf wrote nothing
            try "<not counted>,,syscalls:sys_enter_read,0,100.00,,\n5,,context-switches,100,100.00,,\n"
                .write(to: counter.output, atomically: true, encoding: .utf8)
            #expect(throws: BenchmarkError.self) { try counter.counts() }
        }
    }

    /// The worker runs under perf (counting off until enabled), dies with it (setpriv), and
    /// waits at its gate before its own exec.
    @Test func theWorkerRunsUnderPerfBehindItsGate() throws {
        try withDirectory { directory in
            let counter = try SystemCallCounter(perf: "/usr/bin/perf", setpriv: "/usr/bin/setpriv", directory: directory, index: 3)
            let (executable, arguments) = counter.command("/opt/customer-worker", ["run"])
            #expect(executable == "/usr/bin/perf")
            let control = directory.appendingPathComponent("perf-control-3").path
            let acknowledgement = directory.appendingPathComponent("perf-ack-3").path
            let gate = directory.appendingPathComponent("worker-gate-3").path
            #expect(arguments == [
                "stat", "-D", "-1", "--control", "fifo:\(control),\(acknowledgement)", "-e", "syscalls:sys_enter_*",
                "-e", "context-switches", "-e", "cpu-migrations", "-x", ",", "-o", counter.output.path, "--",
                "/usr/bin/setpriv", "--pdeathsig", "KILL", "--", "/bin/sh", "-c", #"read go < "$0" && exec "$@""#, gate,
                "/opt/customer-worker", "run",
            ])
            for fifo in [control, acknowledgement, gate] {
                var info = stat()
                #expect(stat(fifo, &info) == 0 && (info.st_mode & S_IFMT) == S_IFIFO, "\(fifo) is a fifo")
            }
        }
    }

    @Test func theRelaysFiguresAreItsLastLine() throws {
        let figures = try #require(Relay.figures("relayed 60000 cpu_ns 1500000000\n"))
        #expect(figures.relayed == 60_000 && figures.cpuSeconds == 1.5)
        // A relay that failed says why instead; the bench reports that, not figures.
        #expect(Relay.figures("logging in: the broker refused the credentials or the virtual host\n") == nil)
        #expect(Relay.figures("") == nil)
        #expect(Relay.figures("relayed 12 cpu_ns\n") == nil)
    }

    private func withDirectory(_ body: (URL) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-settings-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try body(directory)
    }
}
