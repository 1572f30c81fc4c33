"""The CI/CD stack (``infra/cicd.yml``) as data: its roles' policies, its deploy pipeline, its approval rule.

The roles' permissions are IAM policy documents, ``infra/policies/<name>.json``, written with
CloudFormation's ``${...}`` variables; ``python -m pipelines.cicd policies --write`` (``make
policies``) renders them into the template's generated block, each as the inline policy of its
role, and a test fails when the two disagree. A team whose IAM is owned elsewhere gives its
platform team the documents: ``python -m pipelines.cicd policy NAME --set ProjectName=... ...``
prints one with the variables filled in.

Tests and ``pipeline-local --walk-deploy`` read the stack from here: the deploy pipeline's stages
in the template's order (a renamed or reordered stage changes the walk), the CodeBuild project
and buildspec each build action runs, and the approval rule's event pattern.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deepfake.core.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "cicd.yml"
POLICIES = ROOT / "infra" / "policies"
BEGIN = "  # BEGIN generated from infra/policies/*.json by `make policies`: edit those files, not this block.\n"
END = "  # END generated\n"
DEPLOY_PIPELINE = "ModelDeployPipeline"
BUILD_PIPELINE = "ModelBuildPipeline"
APPROVAL_RULE = "ModelApprovedRule"


@dataclass(frozen=True)
class Role:
    logical_id: str
    policy: str              # infra/policies/<policy>.json
    service: str             # who assumes it
    suffix: str              # the role's name: <ProjectName>-<suffix>, under the path /<ProjectName>/
    description: str
    skips: tuple[tuple[str, str], ...] = ()   # IaC scanner (checkov) findings accepted, each with its reason

    @property
    def parameter(self) -> str:
        """The template parameter that names an existing role instead (empty: the stack creates this one)."""
        return f"{self.logical_id}Arn"

    @property
    def condition(self) -> str:
        return f"Create{self.logical_id}"


# SageMaker creates a job's or an endpoint's network interfaces in the subnets get_pipeline or the stage config
# names, which this stack does not know: the actions AWS documents for VPC jobs, on any subnet (statement JobsInYourVpc).
VPC_SKIPS = tuple((check, "SageMaker creates the network interfaces of jobs and endpoints in the subnets the pipeline "
                          "or stage config names, unknown to this stack (statement JobsInYourVpc)")
                  for check in ("CKV_AWS_111", "CKV_AWS_109"))
ROLES = (
    Role("PipelineRole", "sagemaker-pipeline", "sagemaker.amazonaws.com", "sagemaker-pipeline",
         "SageMaker pipeline and Processing jobs", VPC_SKIPS),
    Role("ModelBuildRole", "model-build", "codebuild.amazonaws.com", "model-build", "Model-build CodeBuild"),
    Role("DeployBuildRole", "deploy-build", "codebuild.amazonaws.com", "deploy-build", "Deploy-build CodeBuild"),
    Role("StagingTestRole", "staging-test", "codebuild.amazonaws.com", "staging-test", "Staging-test CodeBuild"),
    Role("CodePipelineRole", "codepipeline", "codepipeline.amazonaws.com", "codepipeline", "Both CodePipelines"),
    Role("CloudFormationRole", "cloudformation-deploy", "cloudformation.amazonaws.com", "cloudformation-deploy",
         "Deploys the staging and prod endpoint stacks",
         (("CKV_AWS_111", "Application Auto Scaling names a scalable target by an ID it assigns at registration, "
                          "so the endpoint variant's target cannot be named in advance (statement AutoScaling)"),)),
    Role("EventsRole", "events", "events.amazonaws.com", "events", "Starts the deploy pipeline on an approval"),
)
BOUNDARY = "ModelRoleBoundary"           # managed policy: the most an endpoint's model role may ever do
BOUNDARY_POLICY = "model-role-boundary"


def made_arn(role: Role) -> dict[str, Any]:
    """The ARN of the role the stack creates (it is named, so no resource refers to itself)."""
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:role/${{ProjectName}}/${{ProjectName}}-"
                       f"{role.suffix}"}


def role_arn(role: Role) -> dict[str, Any]:
    """The ARN of the role a stack uses: the one it creates or the given one."""
    return {"Fn::If": [role.condition, made_arn(role), {"Ref": role.parameter}]}


def _role(logical_id: str) -> Role:
    return next(r for r in ROLES if r.logical_id == logical_id)


# Variables of the policy documents that are not parameters or pseudo parameters of the template.
DERIVED: dict[str, Any] = {
    "UsedPipelineRoleArn": role_arn(_role("PipelineRole")),
    "UsedCloudFormationRoleArn": role_arn(_role("CloudFormationRole")),
    "UsedConnectionArn": {"Fn::If": ["UseCodeCommit", {"Fn::Sub": "arn:${AWS::Partition}:codeconnections:"
                                                                  "${AWS::Region}:${AWS::AccountId}:connection/none"},
                                     {"Fn::If": ["CreateConnection", {"Ref": "Connection"}, {"Ref": "ConnectionArn"}]}]},
    "ModelRoleBoundaryArn": {"Ref": BOUNDARY},
    "CodeCommitRepository": {"Ref": "RepositoryId"},
    # Without a key of the project's, the bucket's is aws/s3, whose key policy lets the account's principals use it
    # through S3: the statement naming its alias then grants nothing (IAM matches a key's ARN, not an alias's).
    "UsedArtifactKmsKeyArn": {"Fn::If": ["HasArtifactKmsKey", {"Ref": "ArtifactKmsKeyArn"}, {
        "Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:alias/aws/s3"}]},
}
_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


# -- reading the template ---------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form functions (``!Ref``, ``!Sub``, ``!GetAtt``...) as their long form."""


def _function(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _function)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)   # noqa: S506 (a SafeLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise PipelineError(f"cannot read the CloudFormation template {path}: {exc}") from None


# -- policies -----------------------------------------------------------------------------------------

def policy_documents() -> dict[str, dict[str, Any]]:
    """infra/policies/<name>.json by name."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(POLICIES.glob("*.json"))}


def _sub(value: Any, own: Role | None = None) -> Any:
    """A document's strings with ``${...}`` as ``Fn::Sub`` (with the derived variables they use); in a role's
    own document its own ARN is the one it is created with."""
    if isinstance(value, dict):
        return {k: _sub(v, own) for k, v in value.items()}
    if isinstance(value, list):
        return [_sub(v, own) for v in value]
    if isinstance(value, str) and "${" in value:
        derived = {**DERIVED, **({f"Used{own.logical_id}Arn": made_arn(own)} if own else {})}
        used = {name: derived[name] for name in _VARIABLE.findall(value) if name in derived}
        return {"Fn::Sub": [value, used] if used else value}
    return value


class _Dumper(yaml.SafeDumper):
    """No anchors and aliases: CloudFormation rejects them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def generated_resources() -> dict[str, Any]:
    """The roles with their documents as inline policies, and the model roles' permissions boundary."""
    docs = policy_documents()
    missing = sorted(({r.policy for r in ROLES} | {BOUNDARY_POLICY}) - set(docs))
    if missing:
        raise PipelineError(f"infra/policies lacks {', '.join(f'{m}.json' for m in missing)}")
    out: dict[str, Any] = {}
    for role in ROLES:
        out[role.logical_id] = {"Type": "AWS::IAM::Role", "Condition": role.condition, **({"Metadata": {
            "checkov": {"skip": [{"id": i, "comment": c} for i, c in role.skips]}}} if role.skips else {}),
            "Properties": {
            "RoleName": {"Fn::Sub": f"${{ProjectName}}-{role.suffix}"},
            "Path": {"Fn::Sub": "/${ProjectName}/"},
            "Description": {"Fn::Sub": f"{role.description} of ${{ProjectName}} (infra/policies/{role.policy}.json)"},
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"Service": role.service}, "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": role.policy, "PolicyDocument": _sub(docs[role.policy], role)}],
        }}
    out[BOUNDARY] = {"Type": "AWS::IAM::ManagedPolicy", "Metadata": {"checkov": {"skip": [
        {"id": i, "comment": c} for i, c in VPC_SKIPS]}}, "Properties": {
        "Description": {"Fn::Sub": "The most an endpoint model role of ${ProjectName} may do (permissions boundary)"},
        "Path": {"Fn::Sub": "/${ProjectName}/"},
        "PolicyDocument": _sub(docs[BOUNDARY_POLICY])}}
    return out


def render_block() -> str:
    # Innermost lists and maps on one line (``Action: [...]``, ``{Fn::Sub: ...}``): the template stays under the
    # 51,200 bytes `aws cloudformation deploy` takes inline.
    body = yaml.dump(generated_resources(), Dumper=_Dumper, sort_keys=False, width=118, default_flow_style=None)
    return BEGIN + "".join(f"  {line}\n" if line else "\n" for line in body.splitlines()) + END


def write_policies(path: Path = TEMPLATE) -> bool:
    """Render the documents into the template's generated block; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise PipelineError(f"{path} has no generated block ({BEGIN.strip()} ... {END.strip()})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + render_block() + tail
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def template_policies(template: Mapping[str, Any]) -> dict[str, Any]:
    """The generated resources as the template holds them now."""
    resources = template["Resources"]
    return {name: resources.get(name) for name in [*(r.logical_id for r in ROLES), BOUNDARY]}


def concrete_policy(name: str, values: Mapping[str, str]) -> dict[str, Any]:
    """A document with its variables filled in, for a role made outside the stack."""
    docs = policy_documents()
    if name not in docs:
        raise PipelineError(f"no policy {name!r}; policies: {', '.join(docs)}")
    text = json.dumps(docs[name])
    missing = sorted(set(_VARIABLE.findall(text)) - set(values))
    if missing:
        raise PipelineError(f"policy {name} needs --set {' --set '.join(f'{m}=...' for m in missing)}")
    return json.loads(_VARIABLE.sub(lambda m: values[m.group(1)], text))


# -- the pipelines and the rule --------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    stage: str
    name: str
    provider: str                      # CodeBuild, CloudFormation, Manual, CodeStarSourceConnection|CodeCommit
    configuration: Mapping[str, Any]
    inputs: tuple[str, ...] = ()       # artifact names
    outputs: tuple[str, ...] = ()
    buildspec: str | None = None       # a CodeBuild action's project's buildspec
    environment: Mapping[str, Any] | None = None   # a CodeBuild action's project's variables (unresolved)


def pipeline_actions(template: Mapping[str, Any], pipeline: str = DEPLOY_PIPELINE) -> list[Action]:
    """Every action of ``pipeline``, stage by stage in the template's order."""
    resources = template["Resources"]
    out = []
    for stage in resources[pipeline]["Properties"]["Stages"]:
        for action in stage["Actions"]:
            type_id = action["ActionTypeId"]
            provider = (type_id["Fn::If"][2] if "Fn::If" in type_id else type_id)["Provider"]
            config = action.get("Configuration", {})
            config = config["Fn::If"][2] if "Fn::If" in config else config
            buildspec, environment = None, None
            if provider == "CodeBuild":
                project = resources[config["ProjectName"]["Ref"]]["Properties"]
                buildspec = project["Source"]["BuildSpec"]
                environment = {v["Name"]: v["Value"] for v in project["Environment"].get("EnvironmentVariables", [])}
            out.append(Action(stage["Name"], action["Name"], provider, config,
                              tuple(a["Name"] for a in action.get("InputArtifacts", [])),
                              tuple(a["Name"] for a in action.get("OutputArtifacts", [])), buildspec, environment))
    return out


def resolve(value: Any, values: Mapping[str, str]) -> Any:
    """A template value with ``Ref`` and ``Fn::Sub`` of ``values`` resolved (what a local walk can know);
    anything else resolves to ''."""
    if isinstance(value, dict):
        if "Ref" in value:
            return values.get(value["Ref"], "")
        if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            return _VARIABLE.sub(lambda m: values.get(m.group(1), ""), value["Fn::Sub"])
        return ""
    return value


def approval_pattern(template: Mapping[str, Any], group: str) -> dict[str, Any]:
    """The approval rule's event pattern with the group parameter filled in (what EventBridge matches)."""
    pattern = json.dumps(template["Resources"][APPROVAL_RULE]["Properties"]["EventPattern"])
    return json.loads(pattern.replace(json.dumps({"Ref": "ModelPackageGroupName"}), json.dumps(group)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.cicd", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("policies", help="check (or --write) the template's generated block")
    w.add_argument("--write", action="store_true")
    one = sub.add_parser("policy", help="print one policy with its variables filled in")
    one.add_argument("name")
    one.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args(argv)
    try:
        if args.command == "policy":
            values = dict(item.split("=", 1) for item in args.set if "=" in item)
            print(json.dumps(concrete_policy(args.name, values), indent=2))
        elif args.write:
            print(f"{TEMPLATE}: {'updated' if write_policies() else 'already up to date'}")
        elif template_policies(load_template()) != generated_resources():
            print(f"{TEMPLATE}'s roles differ from infra/policies: run `make policies`", file=sys.stderr)
            return 1
    except PipelineError as exc:
        print(f"cicd: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
