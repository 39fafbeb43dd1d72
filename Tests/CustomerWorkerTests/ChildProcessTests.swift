import BrokerTestSupport
import ChildProcess
import Foundation
import Testing

/// What a spawned process gets from its parent.
@Suite("Child processes")
struct ChildProcessTests {
    /// A listening socket of the test process (opened without close-on-exec, as a server of another
    /// test could be) does not reach the child: a child holding it would keep that port bound after
    /// its test closed it, and look like a second listener to whoever scans for the child's port.
    @Test func aChildInheritsNoDescriptorButItsStandardOnes() async throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0 && listen(listener, 1) == 0)
        try #require(fcntl(listener, F_GETFD) & FD_CLOEXEC == 0, "the socket must be inheritable for this test to mean anything")

        let output = FileManager.default.temporaryDirectory.appendingPathComponent("child-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let pid = try ChildProcess.spawn("/bin/sleep", ["30"], environment: [:], output: output, errorsToOutput: true)
        // Nothing below throws until the child is killed and reaped.
        // The descriptors are the child's once it runs `sleep` (exec marks and closes them). The
        // kernel points /proc/PID/exe at the new program a moment before it closes the
        // close-on-exec descriptors (a run saw one then, 2026-12-07), so the test waits until only
        // the standard ones are left; an inherited one stays as long as `sleep` runs, and fails it.
        var descriptors: [String] = []
        _ = try? await waitFor(timeout: .seconds(10)) {
            let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
            guard executable?.hasSuffix("sleep") == true else { return false }
            descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            return Set(descriptors) == ["0", "1", "2"]
        }
        kill(pid, SIGKILL)
        let status = try await ChildProcess.waitForExit(pid, timeout: .seconds(10))
        #expect(status == 128 + SIGKILL)
        #expect(Set(descriptors) == ["0", "1", "2"], "the child holds \(descriptors.sorted())")
    }
}
