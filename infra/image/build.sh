#!/usr/bin/env bash
# Build and push the kit's images (infra/image/Dockerfile) to IMAGE_REPOSITORY_URI, one per flavour,
# tagged <kit version>-<lock sha256[:12]>-<flavour>; a tag already in the repository is not built again.
# Writes image-uris.json: the get_pipeline arguments naming each image by digest. Run by the model-build
# CodeBuild (buildspec.yml) from the repository root, with Docker (privileged mode) and AWS credentials.
#
#   IMAGE_REPOSITORY_URI=ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME PYTHON=.venv/bin/python infra/image/build.sh
set -euo pipefail

: "${IMAGE_REPOSITORY_URI:?set IMAGE_REPOSITORY_URI to the ECR repository (the CI/CD stack creates it)}"
: "${AWS_REGION:?set AWS_REGION}"
PYTHON="${PYTHON:-python3}"
OUT="${IMAGE_URIS_FILE:-image-uris.json}"
registry="${IMAGE_REPOSITORY_URI%%/*}"
repository="${IMAGE_REPOSITORY_URI#*/}"
tag="$("$PYTHON" -m pipelines.deepfake.image tag)"

aws ecr get-login-password --region "$AWS_REGION" | docker login --username AWS --password-stdin "$registry"
declare -A kwarg=([cpu]=processing_image_uri [gpu]=training_image_uri [serving]=inference_image_uri)
declare -A base=()
uris="{"
for flavour in cpu gpu serving; do
    image_tag="$tag-$flavour"
    if aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=$image_tag" >/dev/null 2>&1; then
        echo "image $IMAGE_REPOSITORY_URI:$image_tag is already in the repository"
    else
        if [ ${#base[@]} -eq 0 ]; then          # the AWS images, as the pipeline picks them (one SDK import)
            while IFS== read -r name uri; do base[$name]="$uri"; done \
                < <("$PYTHON" -m pipelines.deepfake.image base --region "$AWS_REGION")
        fi
        # The AWS images live in AWS's own registry: log in to it to pull the base.
        aws ecr get-login-password --region "$AWS_REGION" \
            | docker login --username AWS --password-stdin "${base[$flavour]%%/*}"
        install_kit=true
        [ "$flavour" = serving ] && install_kit=false
        docker build -f infra/image/Dockerfile --build-arg "BASE_IMAGE=${base[$flavour]}" --build-arg "INSTALL_KIT=$install_kit" \
            -t "$IMAGE_REPOSITORY_URI:$image_tag" .
        docker push "$IMAGE_REPOSITORY_URI:$image_tag"
    fi
    digest="$(aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=$image_tag" \
        --query 'imageDetails[0].imageDigest' --output text)"
    uris="$uris\"${kwarg[$flavour]}\": \"$IMAGE_REPOSITORY_URI@$digest\", "
done
echo "${uris%, }}" > "$OUT"
echo "images by digest -> $OUT: $(cat "$OUT")"
