"""Response models of the JSON API (they document it in FastAPI's OpenAPI schema at ``/docs``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    class_: int = Field(alias="class", description="top-1 class index")
    label: str | None = Field(description="class name, when the model has names")
    confidence: float | None = Field(description="softmax confidence of the top-1 class")


class ModelVerdict(BaseModel):
    model: str
    before: Prediction = Field(description="prediction on the original")
    after: Prediction = Field(description="prediction on the saved protected file")
    kept: bool = Field(description="whether the top-1 prediction is unchanged")
    threats: dict[str, float] | None = Field(
        None, description="unauthorized models: agreement with the model's own clean prediction through each "
                          "pipeline of the threat suite (onlymine.threats; fivecrop: the share of the five crops)")


class Quality(BaseModel):
    psnr: float | None = Field(description="dB between original and protected file (null when identical)")
    ssim: float
    linf_255: float = Field(description="largest pixel change, in 1/255 units")


class ImageResult(BaseModel):
    index: int
    name: str = Field(description="the uploaded file's name (display only)")
    status: str = Field(description="queued | running | ok | failed (authorized prediction not kept) | error")
    width: int
    height: int
    message: str | None = None
    authorized: ModelVerdict | None = None
    unauthorized: list[ModelVerdict] | None = None
    quality: Quality | None = None
    settings: dict[str, float | int] | None = None
    seconds: float | None = None
    protected_url: str | None = Field(None, description="download of the protected PNG (no metadata)")
    before_url: str | None = Field(None, description="downscaled preview of the original")
    diff_url: str | None = Field(None, description="downscaled amplified difference (eps = white)")


class Progress(BaseModel):
    done: int
    total: int


class JobStatus(BaseModel):
    id: str
    state: str = Field(description="queued | running | done | failed")
    message: str
    model: str
    preset: str
    created: float
    started: float | None
    finished: float | None
    expires: float | None = Field(description="unix time after which the results are deleted")
    progress: Progress
    images: list[ImageResult]
    status_url: str
    zip_url: str | None = None


class Health(BaseModel):
    status: str
    jobs: int
    waiting: int
    running: int
    workers: int
    queue_limit: int


class Error(BaseModel):
    detail: str
