// Runs Jenkins Shared Library steps outside Jenkins, for tests/test_library_runs.py: the
// pipeline steps the library calls are stood in for (lock, node, timeout, credentials and
// the rest only record that they were called, around their bodies), except `sh`, which
// really runs in the workspace, and `input`, which approves as APPROVER. The install
// lines are skipped (envpipe is already where they would put it).
//
// Usage: groovy run_library.groovy WORKSPACE LIBRARY CALLS [--each]  (CALLS: Groovy using the steps)
// Prints what the steps did, one event per line; an error() ends it with exit 1, or with
// --each, each line of CALLS is run by itself and an error() only ends that line.

File workspace = new File(args[0])
File library = new File(args[1])
String calls = new File(args[2]).text

Map env = [:]
List<List<String>> withEnvs = []
Binding binding = new Binding()

Closure event = { String text -> println("event: " + text) }

Closure run = { String script, boolean returnStdout ->
    if (script.startsWith('python3 -m venv') || script.startsWith('.envpipe-venv/bin/python -m pip')) {
        event("install " + script)
        return ''
    }
    event("sh " + script)
    ProcessBuilder builder = new ProcessBuilder('sh', '-c', script).directory(workspace)
    Map<String, String> environment = builder.environment()
    env.each { k, v -> if (v != null) { environment.put(k.toString(), v.toString()) } }
    withEnvs.each { vars -> vars.each { entry -> int at = entry.indexOf('='); environment.put(entry[0..<at], entry[(at + 1)..-1]) } }
    if (!returnStdout) {
        builder.inheritIO()
    }
    Process process = builder.start()
    String out = returnStdout ? process.inputStream.text : ''
    if (process.waitFor() != 0) {
        throw new IllegalStateException("script returned exit code ${process.exitValue()}: ${script}")
    }
    return out
}

binding.setVariable('env', env)
binding.setVariable('scm', 'scm')
binding.setVariable('currentBuild', new Expando())
binding.setVariable('sh', { arg -> arg instanceof Map ? run(arg.script, arg.returnStdout ?: false) : run(arg, false) })
binding.setVariable('lock', { Map a, Closure body -> event("lock " + a.resource); try { body() } finally { event("unlock " + a.resource) } })
binding.setVariable('timeout', { Map a, Closure body -> event("timeout ${a.time} ${a.unit}"); body() })
binding.setVariable('node', { label, Closure body -> event("node " + label); try { body() } finally { event("end node") } })
binding.setVariable('checkout', { s -> event("checkout") })
binding.setVariable('withEnv', { List vars, Closure body -> withEnvs << vars; try { body() } finally { withEnvs.remove(withEnvs.size() - 1) } })
binding.setVariable('usernamePassword', { Map m -> "usernamePassword " + m.credentialsId })
binding.setVariable('string', { Map m -> "string " + m.credentialsId })
binding.setVariable('withCredentials', { List creds, Closure body -> event("credentials " + creds.join(", ")); try { body() } finally { event("end credentials") } })
binding.setVariable('junit', { Map m -> event("junit " + m.testResults) })
binding.setVariable('stash', { Map m -> event("stash " + m.name) })
binding.setVariable('unstash', { String name -> event("unstash " + name) })
binding.setVariable('writeFile', { Map m -> File file = new File(workspace, m.file); file.parentFile.mkdirs(); file.text = m.text })
binding.setVariable('milestone', { Map m -> event("milestone " + m.label) })
binding.setVariable('echo', { String text -> event("echo " + text) })
binding.setVariable('input', { Map m -> event("input ${m.message} submitter=${m.submitter}"); System.getenv('APPROVER') })
binding.setVariable('error', { String message -> throw new IllegalArgumentException(message) })

GroovyShell shell = new GroovyShell(binding)
new File(library, 'vars').listFiles().findAll { it.name.endsWith('.groovy') }.each { file ->
    Script step = shell.parse(file)
    String name = file.name - '.groovy'
    binding.setVariable(name, { Object[] arguments -> step.invokeMethod('call', arguments) })
}
List<String> runs = args.length > 3 && args[3] == '--each' ? calls.readLines() : [calls]
for (String run_ in runs) {
    try {
        shell.evaluate(run_)
    } catch (IllegalArgumentException failure) {
        println("error: " + failure.message)
        if (runs.size() == 1) {
            System.exit(1)
        }
    }
}
