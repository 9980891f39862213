"""The command line on both repository backends, as a subprocess."""


def test_publish_then_promote_puts_version_bytes_in_environment_folder(project):
    from conftest import read_repository_file

    project.write("main.tf", 'resource "terraform_data" "a" {}\n')
    assert project.envpipe("publish", "--version", "1.0.1", check=0).stdout.strip() == "1.0.1"
    project.envpipe("promote", "1.0.1", "--to", "test", check=0)
    assert read_repository_file(project.repository, "test/main.tf") == b'resource "terraform_data" "a" {}\n'
